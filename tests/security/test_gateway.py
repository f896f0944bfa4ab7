"""Tenancy and disclosure through the real gateway (``tests.fixtures.servers``: tenant ``acme`` may
use every policy, tenant ``other`` only ``other-only``; open mode off)."""

from __future__ import annotations

import asyncio
import json
import re

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


ACTIONS = {"allow", "flag", "redact", "escalate", "block"}
# Every route and outcome that answers with guard headers, for an app key and an admin key alike:
# no key may read a score from a header (scores are in bodies the caller asked for: check,
# moderations, a block answered as an error).
ANSWERS = [(CHAT, {"model": "scripted", "messages": UNSAFE}, None),
           (CHAT, {"model": "scripted", "messages": UNSAFE, "stream": True}, None),
           (CHAT, {"model": "scripted", "messages": [{"role": "user", "content": "zorblax"}]}, "errors"),
           (CHAT, {"model": "scripted", "messages": UNSAFE}, "redact"),
           (CHAT, {"model": "scripted", "messages": UNSAFE, "stream": True}, "shadow"),
           (CHAT, {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}, "slow-guard"),
           ("/v1/guard/check", {"messages": UNSAFE}, None),
           ("/v1/moderations", {"input": "tell me about zorblax"}, None)]


@pytest.mark.parametrize("key", ["acme", "admin"])
def test_no_guard_header_of_any_answer_carries_a_score(gateway, key):
    for path, body, policy in ANSWERS:
        headers = {**auth(key), **({"x-guard-policy": policy} if policy else {})}
        response = post(gateway, path, body, headers)
        assert response.status_code in (200, 400), response.text
        guard = {k: v for k, v in response.headers.items() if k.startswith("x-guard")}
        assert set(guard) <= GUARD_HEADERS, (path, policy, guard)
        if path == CHAT and response.status_code == 200:
            assert "x-guard-decision" in guard and "x-guard-policy" in guard, (policy, response.headers)
        for name, value in guard.items():  # each value's whole form: an action, a policy ref, a time
            if name in ("x-guard-decision", "x-guard-shadow-decision"):
                assert value in ACTIONS, (name, value)
            elif name == "x-guard-policy":
                assert re.fullmatch(r"[\w.-]+@[\w.-]+", value), value
            else:
                assert re.fullmatch(r"\d+(\.\d+)?", value) and name == "x-guard-check-ms", (name, value)


# --------------------------------------------------------------------------- probes and metrics


@pytest.mark.parametrize("headers", [{}, auth("acme"), {"authorization": "Bearer sk-wrong"}],
                         ids=["no-key", "app-key", "wrong-key"])
def test_probes_answer_anyone_with_the_status_alone(gateway, headers):
    """Orchestrators probe without keys: the status, nothing about upstreams, models or tenants."""
    assert httpx.get(f"{gateway.url}/healthz", headers=headers).json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz", headers=headers, timeout=30)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}, ready.text
    assert not {h for h in ready.headers if h.startswith("x-guard")}


def test_readiness_details_are_for_admin_keys_and_name_their_own_upstreams_only(gateway):
    body = httpx.get(f"{gateway.url}/readyz", headers=auth("admin"), timeout=30).json()
    assert body["status"] == "ready" and set(body["models"]) == {"llama_guard", "prompt_guard"}
    assert body["upstreams"] == {"default": "reachable", "local-chat": "reachable"}  # tenant acme's routes
    assert "127.0.0.1" not in json.dumps(body) and "other" not in json.dumps(body)


def test_metrics_need_an_admin_key_and_show_its_own_tenant_only(gateway):
    for tenant in ("acme", "other"):  # both tenants have decision samples
        post(gateway, CHAT, {"model": "scripted", "messages": UNSAFE}, auth(tenant))
    for headers, status in (({}, 401), ({"authorization": "Bearer sk-wrong"}, 401), (auth("acme"), 403)):
        response = httpx.get(f"{gateway.url}/metrics", headers=headers)
        assert response.status_code == status and error_shaped(response.json()), response.text
        assert "guard_" not in response.text
    text = httpx.get(f"{gateway.url}/metrics", headers=auth("admin")).text
    assert 'tenant="acme"' in text and 'tenant="other"' not in text
    assert "guard_requests_total" in text and "://" not in text  # no upstream URL in any label


def test_the_metrics_listener_serves_prometheus_without_a_key(demo_models, scripted_upstream, tmp_path):
    from guard.gateway.app import create_app
    from guard.gateway.server import ServerThread
    from guard.settings import GuardSettings
    from tests.fixtures.servers import write_policies

    settings = GuardSettings(
        llama_guard=str(demo_models.llama_guard), family="llama-guard-3-1b",
        prompt_guard=str(demo_models.prompt_guard_2), dtype="float32", device="cpu",
        upstream=f"{scripted_upstream.url}/v1", policies_dir=write_policies(tmp_path / "policies"),
        audit_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}", open_mode=False, metrics_port=0)
    app = create_app(settings)
    port = app.state.metrics_listener.server_port
    with ServerThread(app) as server:
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/metrics").status_code == 401  # the API listener still wants a key
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200 and 'guard_requests_total{route="/healthz",status="200"}' in scraped.text
    with pytest.raises(httpx.TransportError):  # closed with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
