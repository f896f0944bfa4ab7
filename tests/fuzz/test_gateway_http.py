"""Schema-driven fuzzing of the real gateway (bounded CI sample; >= 10,000 requests in
``bench/reliability.py``): no 5xx, no traceback, every error in OpenAI's shape."""

from __future__ import annotations

import asyncio

import httpx

from bench._reliability.harness import error_shaped
from bench._reliability.http_fuzz import fuzz_gateway
from tests.fixtures.servers import KEYS

AUTH = {"authorization": f"Bearer {KEYS['acme']}"}


def test_generated_requests_get_no_5xx_and_only_openai_shaped_errors(gateway):
    tally = fuzz_gateway(gateway.url, schema_examples=12, shaped_examples=150, strict=True, headers=AUTH)
    tally.assert_held()
    assert tally.total >= 250 and tally.counts["2xx"] > 0 and tally.counts["4xx"] > 0, tally.summary()


def test_a_lone_surrogate_is_a_400_and_fails_no_one_elses_check(gateway):
    """Found by the fuzzer: the tokenizers refuse lone surrogates, which failed the whole model
    batch (503 for every request batched with it)."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, headers=AUTH, timeout=120) as client:
            raw = {"content-type": "application/json"}
            bad = [client.post("/v1/moderations", content=b'{"input": "x \\udfff y"}', headers=raw),
                   client.post("/v1/guard/check", content=b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
                               headers=raw)]
            good = [client.post("/v1/moderations", json={"input": f"what is the weather in town {i}?"})
                    for i in range(8)]
            return list(await asyncio.gather(*bad, *good))

    responses = asyncio.run(burst())
    for response in responses[:2]:
        assert response.status_code == 400 and error_shaped(response.json())
        assert "not valid Unicode" in response.json()["error"]["message"]
    assert [r.status_code for r in responses[2:]] == [200] * 8


def test_a_number_json_cannot_carry_is_a_400_not_a_crash(gateway):
    """Found by the fuzzer: ``NaN`` / ``1e999`` in a forwarded field crashed the upstream call's JSON
    encoder (500, then a reset connection)."""
    for stream in ("false", "true"):
        payload = ('{"model": "scripted", "stream": %s, "temperature": NaN, "x": 1e999, '
                   '"messages": [{"role": "user", "content": "hello"}]}' % stream)
        response = httpx.post(f"{gateway.url}/v1/chat/completions", content=payload, timeout=60,
                              headers={**AUTH, "content-type": "application/json"})
        assert response.status_code == 400 and error_shaped(response.json()), response.text
        assert "NaN or Infinity" in response.json()["error"]["message"]
