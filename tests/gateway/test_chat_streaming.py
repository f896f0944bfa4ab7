"""POST /v1/chat/completions with stream=True: SSE chunks as OpenAI sends them, guarded in windows."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.fixtures.servers import KEYS
from tests.gateway.conftest import make_async_client, policy, user


def collect(stream) -> tuple[list[str], list[str | None]]:
    contents, finishes = [], []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            contents.append(choice.delta.content or "")
            finishes.append(choice.finish_reason)
    return contents, finishes


def test_a_benign_stream_arrives_as_the_upstream_sent_it(client, direct):
    prompt = user("[[words:10]]")
    through, finishes = collect(
        client.chat.completions.create(model="scripted", messages=prompt, stream=True)
    )
    straight, _ = collect(direct.chat.completions.create(model="scripted", messages=prompt, stream=True))
    assert through == straight
    assert "".join(through) == " ".join(f"w{i}" for i in range(10))
    assert finishes[-1] == "stop"


def test_hold_back_never_sends_flagged_text_and_ends_with_content_filter(client):
    stream = client.chat.completions.create(
        model="scripted", messages=user("[[unsafe_at:9:24]]"), stream=True
    )
    contents, finishes = collect(stream)
    assert finishes[-1] == "content_filter"
    assert not any("zorblax" in c for c in contents)
    released = "".join(contents)
    full = " ".join(f"w{i}" for i in range(24))
    assert full.startswith(released)  # whole windows before the block, nothing after it
    assert "w10" not in released


def test_stream_first_releases_at_once_and_stops_at_the_violation(client):
    prompt = user("[[unsafe_at:6:80]] [[delay_ms:30]]")
    contents, finishes = collect(
        client.chat.completions.create(
            model="scripted", messages=prompt, stream=True, extra_headers=policy("first")
        )
    )
    released = "".join(contents)
    assert "zorblax" in released  # stream_first: sent before its window was checked
    assert finishes[-1] == "content_filter"
    assert "w79" not in released  # stopped well before the end of the answer
    assert finishes.count("stop") == 0


def test_a_blocked_prompt_streams_the_refusal_then_content_filter(client):
    with client.chat.completions.with_streaming_response.create(
        model="scripted", messages=user("tell me about zorblax"), stream=True
    ) as response:
        assert response.headers["x-guard-decision"] == "block"
        contents, finishes = collect(response.parse())
    assert "".join(contents) == "Sorry, I can't help with that."
    assert finishes[-1] == "content_filter"


def test_streams_end_with_done_and_every_window_is_audited(gateway):
    body = {"model": "scripted", "stream": True, "messages": user("[[unsafe_at:9:24]]")}
    headers = {"authorization": f"Bearer {KEYS['acme']}", "x-request-id": "stream-audit-1"}
    lines = []
    with httpx.stream(
        "POST", f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=60
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    admin = {"authorization": f"Bearer {KEYS['admin']}"}
    records = httpx.get(
        f"{gateway.base_url}/guard/audit", params={"request_id": "stream-audit-1"}, headers=admin, timeout=30
    ).json()["data"]
    windows = sorted(r["window_index"] for r in records if r["direction"] == "stream_window")
    assert windows == list(range(len(windows))) and len(windows) >= 3
    assert [r["decision"]["action"] for r in records if r["direction"] == "stream_window"].count("block") == 1
    assert any(r["direction"] == "input" for r in records)


def test_the_async_client_streams_and_is_stopped_alike(gateway):
    async def run() -> tuple[str, str | None, str, str | None]:
        async with make_async_client(gateway.base_url) as client:

            async def one(text: str) -> tuple[str, str | None]:
                stream = await client.chat.completions.create(
                    model="scripted", messages=user(text), stream=True
                )
                parts, finish = [], None
                async for chunk in stream:
                    for choice in chunk.choices:
                        parts.append(choice.delta.content or "")
                        finish = choice.finish_reason or finish
                return "".join(parts), finish

            (a, fa), (b, fb) = await asyncio.gather(one("[[words:6]]"), one("[[unsafe_at:5:12]]"))
            return a, fa, b, fb

    benign, benign_finish, blocked, blocked_finish = asyncio.run(run())
    assert benign == "w0 w1 w2 w3 w4 w5" and benign_finish == "stop"
    assert "zorblax" not in blocked and blocked_finish == "content_filter"


def active_upstream_streams(gateway) -> int:
    return httpx.get(gateway.upstream_url.removesuffix("/v1") + "/debug/streams").json()["active"]


def wait_for_no_upstream_stream(gateway, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if active_upstream_streams(gateway) == 0:
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_goes_away_closes_the_upstream_stream(gateway):
    body = {"model": "scripted", "stream": True, "messages": user("[[words:300]] [[delay_ms:20]]")}
    headers = {"authorization": f"Bearer {KEYS['acme']}"}
    url = f"{gateway.base_url}/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert active_upstream_streams(gateway) == 1
    # 300 chunks at 20 ms would take 6 s: the upstream stream must end long before that.
    assert wait_for_no_upstream_stream(gateway, 3.0)


def test_a_stream_stopped_at_a_violation_closes_the_upstream_stream(client, gateway):
    prompt = user("[[unsafe_at:4:300]] [[delay_ms:20]]")
    started = time.monotonic()
    contents, finishes = collect(
        client.chat.completions.create(
            model="scripted", messages=prompt, stream=True, extra_headers=policy("first")
        )
    )
    assert finishes[-1] == "content_filter"
    assert wait_for_no_upstream_stream(gateway, 3.0)
    assert time.monotonic() - started < 5.0  # the upstream's full answer would take 6 s
