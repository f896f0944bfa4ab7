"""The native check API, models, health, metrics and the admin audit endpoints."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.servers import KEYS


def post(gateway, path: str, body: dict, key: str = "acme") -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}{path}", json=body, timeout=60, headers={"authorization": f"Bearer {KEYS[key]}"}
    )


def test_check_returns_the_full_results_and_the_decision(gateway):
    response = post(
        gateway, "/guard/check", {"messages": [{"role": "user", "content": "tell me about zorblax"}]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["decision"]["action"] == "block"
    assert body["decision"]["policy"]["id"] == "default"
    assert body["results"]["llama_guard"]["categories"] == ["S9"]
    assert body["results"]["prompt_guard"][0]["source"] == "user"
    assert body["check_ms"] > 0


def test_check_judges_an_assistant_reply_in_the_output_direction(gateway):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "zorblax is made like this"},
    ]
    body = post(gateway, "/guard/check", {"messages": messages, "direction": "output"}).json()
    assert body["direction"] == "output" and body["decision"]["action"] == "block"
    assert body["results"]["prompt_guard"] == []  # Prompt Guard scans input only


def test_check_with_a_named_policy_and_bad_fields(gateway):
    shadow = post(
        gateway, "/guard/check", {"messages": [{"role": "user", "content": "zorblax"}], "policy": "shadow"}
    )
    assert shadow.json()["decision"]["effective_action"] == "allow"
    assert post(gateway, "/guard/check", {"messages": [], "direction": "input"}).status_code == 400
    assert post(gateway, "/guard/check", {"messages": [], "surprise": 1}).status_code == 422


def test_models_lists_the_guard_models_and_the_upstream_ones(client):
    ids = [m.id for m in client.models.list()]
    assert any("llama" in i.lower() or "guard" in i.lower() for i in ids)
    assert "scripted" in ids


def test_health_readiness_and_metrics(gateway, client):
    admin = {"authorization": f"Bearer {KEYS['admin']}"}
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz", timeout=30, headers=admin)
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["models"]) == {"llama_guard", "prompt_guard"}
    assert ready.json()["upstreams"] == {"default": "reachable", "local-chat": "reachable"}
    client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}])
    text = httpx.get(f"{gateway.url}/metrics", headers=admin).text
    assert 'guard_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert "guard_decisions_total" in text


def test_the_audit_log_is_for_admin_keys_and_their_tenant_only(gateway):
    post(gateway, "/guard/check", {"messages": [{"role": "user", "content": "audit me"}]})
    denied = httpx.get(f"{gateway.base_url}/guard/audit", headers={"authorization": f"Bearer {KEYS['acme']}"})
    assert denied.status_code == 403
    records = httpx.get(
        f"{gateway.base_url}/guard/audit",
        params={"limit": 5},
        headers={"authorization": f"Bearer {KEYS['admin']}"},
    ).json()["data"]
    assert records and all(r["tenant"] == "acme" for r in records)


@pytest.mark.parametrize("path", ["/guard/review"])
def test_the_review_queue_answers_admin_keys(gateway, path):
    response = httpx.get(f"{gateway.base_url}{path}", headers={"authorization": f"Bearer {KEYS['admin']}"})
    assert response.status_code == 200 and response.json()["object"] == "list"
