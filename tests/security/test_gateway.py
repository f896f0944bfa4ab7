"""Tenancy and disclosure through the real gateway (``tests.fixtures.servers``: tenant ``acme`` may
use every policy, tenant ``other`` only ``other-only``; open mode off)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from bench._reliability.harness import error_shaped
from tests.fixtures.servers import KEYS, POLICIES

CHAT = "/v1/chat/completions"
UNSAFE = [{"role": "user", "content": "[[say:unsafe]]"}]  # the scripted upstream answers with zorblax
FOREIGN = sorted(set(POLICIES) - {"other-only"})
GUARD_HEADERS = {"x-guard-decision", "x-guard-policy", "x-guard-check-ms", "x-guard-shadow-decision"}


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[key]}"}


def post(gateway, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers or {}, timeout=60)


@pytest.mark.parametrize("requested", [*FOREIGN, "SHADOW", "sha\tdow", "../shadow", "shadow,other-only",
                                       "other-only,shadow", "*", "nonexistent"])
def test_a_tenant_cannot_pick_a_policy_it_does_not_own(gateway, requested):
    """Every foreign, mangled or unknown policy id is the same 404 (ids of other tenants are not
    revealed), through the chat header and the check API's field alike."""
    chat = post(gateway, CHAT, {"model": "scripted", "messages": UNSAFE}, {**auth("other"), "x-guard-policy": requested})
    check = post(gateway, "/v1/guard/check", {"messages": UNSAFE, "policy": requested}, auth("other"))
    for response in (chat, check):
        assert response.status_code == 404 and error_shaped(response.json()), response.text
        assert response.json()["error"]["code"] == "policy_not_found"
        assert not GUARD_HEADERS & set(response.headers)
    unknown = post(gateway, "/v1/guard/check", {"messages": UNSAFE, "policy": "no-such-policy-x"}, auth("other"))
    assert chat.json()["error"]["message"].replace(repr(requested)[1:-1], "X") == \
        unknown.json()["error"]["message"].replace("no-such-policy-x", "X")


def test_a_repeated_policy_header_cannot_smuggle_a_foreign_policy(gateway):
    headers = [("authorization", f"Bearer {KEYS['other']}"), ("x-guard-policy", "other-only"),
               ("x-guard-policy", "shadow")]
    response = httpx.post(f"{gateway.url}{CHAT}", json={"model": "scripted", "messages": UNSAFE}, headers=headers,
                          timeout=60)
    assert response.status_code in (200, 404)
    if response.status_code == 200:
        assert response.headers["x-guard-policy"].startswith("other-only@")
        assert response.json()["choices"][0]["finish_reason"] == "content_filter"


def test_a_body_field_cannot_choose_the_policy_of_a_chat_request(gateway):
    body = {"model": "scripted", "messages": UNSAFE, "policy": "shadow", "x-guard-policy": "shadow",
            "metadata": {"policy": "shadow"}}
    response = post(gateway, CHAT, body, auth("acme"))
    assert response.headers["x-guard-policy"].startswith("default@")
    assert response.json()["choices"][0]["finish_reason"] == "content_filter"


def test_shadow_requests_never_switch_enforcement_off_for_concurrent_requests(gateway):
    """Shadow and enforced requests interleaved on one gateway: each is decided by its own policy."""

    async def burst() -> list[tuple[str, httpx.Response]]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as client:
            plan = [("acme-shadow", {**auth("acme"), "x-guard-policy": "shadow"}), ("acme", auth("acme")),
                    ("other", auth("other"))] * 4
            calls = [client.post(CHAT, json={"model": "scripted", "messages": UNSAFE, "stream": i % 2 == 1},
                                 headers=headers) for i, (_, headers) in enumerate(plan)]
            return list(zip([name for name, _ in plan], await asyncio.gather(*calls)))

    for name, response in asyncio.run(burst()):
        assert response.status_code == 200, response.text
        streamed = response.headers["content-type"].startswith("text/event-stream")
        if name == "acme-shadow":
            assert response.headers["x-guard-decision"] == "allow" and "zorblax" in response.text
            if not streamed:  # a stream's headers leave before its output windows are judged
                assert response.headers["x-guard-shadow-decision"] == "block"
        else:
            assert "zorblax" not in response.text and "x-guard-shadow-decision" not in response.headers, name
            assert "content_filter" in response.text, name
            if not streamed:
                assert response.headers["x-guard-decision"] == "block", name


ROUTES = [("POST", CHAT, {"model": "scripted", "messages": UNSAFE}), ("POST", "/v1/guard/check", {"messages": UNSAFE}),
          ("POST", "/v1/moderations", {"input": "tell me about zorblax"}), ("GET", "/v1/models", None),
          ("GET", "/v1/guard/audit", None), ("GET", "/v1/guard/review", None)]
BAD_AUTH = [{}, {"authorization": "Bearer sk-wrong"}, {"authorization": "Basic " + KEYS["acme"]},
            {"authorization": "Bearer"}, {"authorization": KEYS["acme"]}, {"x-api-key": KEYS["acme"]}]


@pytest.mark.parametrize("method,path,body", ROUTES, ids=[r[1] for r in ROUTES])
@pytest.mark.parametrize("headers", BAD_AUTH, ids=["none", "wrong", "basic", "empty", "no-scheme", "x-api-key"])
def test_unauthenticated_callers_get_a_401_without_guard_headers_or_scores(gateway, method, path, body, headers):
    response = httpx.request(method, f"{gateway.url}{path}", json=body, headers=headers, timeout=60)
    assert response.status_code == 401 and error_shaped(response.json())
    assert not {h for h in response.headers if h.startswith("x-guard")}
    text = response.text.lower()
    assert "score" not in text and "zorblax" not in text and "decision" not in text


def test_guard_headers_carry_decisions_never_scores(gateway):
    flagged = post(gateway, CHAT, {"model": "scripted", "messages": UNSAFE}, auth("acme"))
    shadow = post(gateway, CHAT, {"model": "scripted", "messages": UNSAFE}, {**auth("acme"), "x-guard-policy": "shadow"})
    for response in (flagged, shadow):
        guard = {k: v for k, v in response.headers.items() if k.startswith("x-guard")}
        assert set(guard) <= GUARD_HEADERS, guard
        assert guard["x-guard-decision"] in ("allow", "flag", "redact", "escalate", "block")
        assert "score" not in json.dumps(guard).lower()
        assert "score" not in json.dumps(response.json().get("choices")).lower()
