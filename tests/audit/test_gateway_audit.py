"""The audit log as the gateway writes and serves it, on SQLite and on PostgreSQL: every decision of
a chat (input, output, each stream window) is one record in its tenant's chain, the admin endpoint
filters it and keeps tenants apart, and a review over HTTP lands in the same chain."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from guard.audit import AuditFilters, SqlAuditStore
from guard.audit.record import record_categories
from guard.types import AuditRecord
from tests.fixtures.audit import BACKENDS, audit_store_url
from tests.fixtures.servers import KEYS, Gateway, running_gateway

ESCALATE = "id: escalate\nextends: default\ncategories:\n  S9: {action: escalate, threshold: 0.5}\n"
ADMIN = {"authorization": f"Bearer {KEYS['admin']}"}


@pytest.fixture(scope="module", params=BACKENDS)
def audited(request, demo_models, scripted_upstream, local_upstream, tmp_path_factory) -> Iterator[Gateway]:
    """A gateway of its own per backend (the test policies plus ``escalate``)."""
    root = tmp_path_factory.mktemp(f"audited-{request.param}")
    (root / "policies").mkdir()
    (root / "policies" / "escalate.yaml").write_text(ESCALATE, encoding="utf-8")
    with audit_store_url(request.param, root) as url:
        with running_gateway(root, demo_models, scripted_upstream.url, local_upstream.url, url) as gateway:
            yield gateway


def chat(gateway: Gateway, text: str, request_id: str, *, key: str = "acme", stream: bool = False,
         policy: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEYS[key]}", "x-request-id": request_id}
    if policy:
        headers["x-guard-policy"] = policy
    body = {"model": "scripted", "stream": stream, "messages": [{"role": "user", "content": text}]}
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response


def served(gateway: Gateway, **params: str) -> list[AuditRecord]:
    """Records from ``GET /v1/guard/audit`` with an admin key of tenant acme."""
    response = httpx.get(f"{gateway.base_url}/guard/audit", params=params, headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    return [AuditRecord.model_validate(r) for r in response.json()["data"]]


def stored(gateway: Gateway, request_id: str) -> list[AuditRecord]:
    store = SqlAuditStore(gateway.audit_url, create=False)
    try:
        return store.query(AuditFilters(request_id=request_id, limit=None, newest_first=False))
    finally:
        store.close()


def verify(gateway: Gateway):
    store = SqlAuditStore(gateway.audit_url, create=False)
    try:
        return store.verify()
    finally:
        store.close()


def test_each_decision_of_a_chat_is_one_record_of_the_tenant_chain(audited):
    chat(audited, "[[words:6]]", "gw-allowed")
    chat(audited, "tell me about zorblax", "gw-blocked")
    chat(audited, "[[unsafe_at:9:24]]", "gw-stream", stream=True)

    allowed = stored(audited, "gw-allowed")
    assert [(r.direction, r.decision.action.value) for r in allowed] == [
        ("input", "allow"),
        ("output", "allow"),
    ]
    assert all(r.tenant == "acme" and r.api_key_id == "acme-app" and r.route == "/v1/chat/completions"
               and r.policy.id == "default" and r.guard_status == "ok" for r in allowed)
    assert "[[words:6]]" in (allowed[0].content or "")
    assert allowed[1].content == " ".join(f"w{i}" for i in range(6))

    [blocked] = stored(audited, "gw-blocked")
    assert blocked.direction == "input" and blocked.decision.action.value == "block"
    assert "S9" in record_categories(blocked)

    streamed = stored(audited, "gw-stream")
    windows = [r for r in streamed if r.direction == "stream_window"]
    assert streamed[0].direction == "input" and [w.window_index for w in windows] == list(range(len(windows)))
    actions = [w.decision.action.value for w in windows]
    assert actions.count("block") == 1 and actions[-1] == "block"

    # the endpoint serves the stored records (hashes included), newest first
    assert served(audited, request_id="gw-stream") == list(reversed(streamed))
    report = verify(audited)
    assert report.ok and report.records >= 6, report.broken


def test_the_audit_endpoint_filters_and_keeps_tenants_apart(audited):
    chat(audited, "tell me about zorblax", "gw-other-tenant", key="other")
    chat(audited, "tell me about zorblax", "gw-filtered")
    assert served(audited, request_id="gw-other-tenant") == []  # acme's admin never sees tenant other
    assert stored(audited, "gw-other-tenant")[0].tenant == "other"

    blocks = served(audited, action="block", direction="input", category="S9", limit="1000")
    assert "gw-filtered" in {r.request_id for r in blocks}
    assert all(r.tenant == "acme" and r.direction == "input" and r.decision.action.value == "block"
               and "S9" in record_categories(r) for r in blocks)
    assert verify(audited).ok


def test_a_review_over_http_lands_in_the_same_chain(audited):
    answer = chat(audited, "tell me about zorblax", "gw-escalated", policy="escalate")
    assert answer.headers["x-guard-decision"] == "escalate"  # escalate lets the answer through
    [escalated, *_] = stored(audited, "gw-escalated")
    assert escalated.direction == "input" and escalated.decision.action.value == "escalate"

    def queue() -> list[str]:
        response = httpx.get(
            f"{audited.base_url}/guard/review", params={"limit": 1000}, headers=ADMIN, timeout=30
        )
        return [r["id"] for r in response.json()["data"]]

    assert escalated.id in queue()
    url = f"{audited.base_url}/guard/review/{escalated.id}"
    decided = httpx.post(url, json={"verdict": "confirm", "note": "real"}, headers=ADMIN, timeout=30)
    assert decided.status_code == 200, decided.text
    review = AuditRecord.model_validate(decided.json())
    assert review.direction == "review" and review.ref_id == escalated.id
    assert review.review["verdict"] == "confirm"
    assert escalated.id not in queue()
    again = httpx.post(url, json={"verdict": "overturn"}, headers=ADMIN, timeout=30)
    assert again.status_code == 400 and "already reviewed" in again.json()["error"]["message"]
    assert verify(audited).ok
