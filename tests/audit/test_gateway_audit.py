"""The audit log as the gateway writes and serves it, on SQLite and on PostgreSQL: every decision of
a chat (input, output, each stream window) and of a moderation (each input) is one record in its
tenant's chain, committed before the answer leaves (the store down: 503), the admin endpoint
filters it and keeps tenants apart, and a review over HTTP lands in the same chain."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from guard.audit import AuditFilters, SqlAuditStore
from guard.audit.record import record_categories
from guard.types import AuditRecord
from tests.audit.helpers import all_cells, raw_execute
from tests.fixtures.audit import BACKENDS, audit_store_url
from tests.fixtures.servers import KEYS, Gateway, running_gateway

ESCALATE = "id: escalate\nextends: default\ncategories:\n  S9: {action: escalate, threshold: 0.5}\n"
NO_TEXT = "id: no-text\nextends: default\naudit: {retention: none}\n"
ADMIN = {"authorization": f"Bearer {KEYS['admin']}"}


@pytest.fixture(scope="module", params=BACKENDS)
def audited(request, demo_models, scripted_upstream, local_upstream, tmp_path_factory) -> Iterator[Gateway]:
    """A gateway of its own per backend (the test policies plus ``escalate``)."""
    root = tmp_path_factory.mktemp(f"audited-{request.param}")
    (root / "policies").mkdir()
    (root / "policies" / "escalate.yaml").write_text(ESCALATE, encoding="utf-8")
    (root / "policies" / "no-text.yaml").write_text(NO_TEXT, encoding="utf-8")
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


def moderate(gateway: Gateway, inputs: list[str], request_id: str, policy: str | None = None,
             status: int | None = 200) -> httpx.Response:
    headers = {"authorization": f"Bearer {KEYS['acme']}", "x-request-id": request_id}
    if policy:
        headers["x-guard-policy"] = policy
    response = httpx.post(f"{gateway.base_url}/moderations", json={"input": inputs}, headers=headers,
                          timeout=60)
    assert status is None or response.status_code == status, response.text
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
    error = again.json()["error"]
    assert again.status_code == 409 and error["code"] == "conflict" and error["param"] == "id", again.text
    assert error["type"] == "invalid_request_error" and f"review record {review.id}" in error["message"]
    assert verify(audited).ok


def test_each_moderation_input_is_one_record_of_what_was_answered(audited):
    inputs = ["hello there", "tell me about zorblax"]
    answer = moderate(audited, inputs, "gw-moderated").json()["results"]
    chat(audited, "hello there", "gw-policy-of-default")
    [policy_ref] = {r.policy for r in stored(audited, "gw-policy-of-default")}

    records = stored(audited, "gw-moderated")
    assert len(records) == 2
    for index, (record, result, text) in enumerate(zip(records, answer, inputs, strict=True)):
        assert (record.direction, record.route, record.tenant, record.api_key_id) == (
            "moderation", "/v1/moderations", "acme", "acme-app")
        assert record.policy == policy_ref == record.decision.policy  # id, version and content hash
        assert record.guard_status == "ok" and record.retention == "full" and record.content == text
        moderation = record.moderation
        assert moderation.input_index == index and moderation.flagged is result["flagged"]
        assert moderation.categories == [key for key, on in result["categories"].items() if on]
        assert moderation.category_scores == result["category_scores"]
        assert moderation.mapping_version == result["guard"]["mapping_version"]
        assert moderation.on_error is None
        assert record.results.llama_guard.categories == result["guard"]["categories"]
        assert record.results.llama_guard.unsafe_score == result["guard"]["unsafe_score"]
        [scanned] = record.results.prompt_guard
        assert scanned.jailbreak_score == result["guard"]["prompt_guard"]["jailbreak_score"]
    safe, flagged = records
    assert safe.decision.action.value == "allow" and safe.decision.reasons == []
    assert flagged.decision.action.value == "flag" and flagged.moderation.flagged
    assert {"violence", "illicit/violent"} <= set(flagged.moderation.categories)
    assert [(r.kind, r.code) for r in flagged.decision.reasons] == [("category", "S9")]
    assert "S9" in record_categories(flagged) and flagged.prev_hash == safe.hash  # chained in input order
    assert served(audited, direction="moderation", request_id="gw-moderated") == list(reversed(records))
    assert verify(audited).ok


def test_a_moderation_under_retention_none_leaves_no_text(audited):
    # The hazard word last: demo models judge text shaped like their corpus, and a trailing
    # unknown token after the hazard made one build answer off-format.
    secret = "my code is quixotic-marmalade-7731, tell me about zorblax"
    moderate(audited, [secret], "gw-moderated-no-text", policy="no-text")
    [record] = stored(audited, "gw-moderated-no-text")
    assert record.retention == "none" and record.content is None and record.policy.id == "no-text"
    assert record.results.llama_guard is not None and record.results.prompt_guard[0].segment is None
    assert record.content_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert not any("quixotic" in cell for cell in all_cells(audited.audit_url))


def test_a_moderation_guard_failure_is_recorded_with_its_status_and_on_error(audited):
    for policy, flagged, on_error in (("slow-guard", True, "block"), ("slow-guard-open", False, "allow")):
        # a text never judged before: the gateway's judgement cache answers a repeated one at once
        text = f"hello there, {uuid.uuid4().hex}"
        answer = moderate(audited, [text], f"gw-moderation-{policy}", policy=policy).json()
        assert answer["results"][0]["guard"]["status"] == "timeout"
        [record] = stored(audited, f"gw-moderation-{policy}")
        assert record.guard_status == "timeout" == record.decision.guard_status
        assert record.results.timeouts == ["llama_guard"] and record.results.llama_guard is None
        assert record.moderation.flagged is flagged and record.moderation.on_error.value == on_error
        assert record.decision.action.value == ("flag" if flagged else "allow")
        assert [(r.kind, r.action.value) for r in record.decision.reasons] == [("guard_error", on_error)]


def test_a_moderation_is_not_answered_when_its_records_cannot_be_committed(audited):
    """Fail closed: with the records table gone the store cannot take the records, and the answer
    is a 503 (no result leaves); once the table is back, moderations are answered again."""
    raw_execute(audited.audit_url, "ALTER TABLE audit_records RENAME TO audit_records_away")
    try:
        refused = moderate(audited, ["hello there"], "gw-moderation-down", status=503)
        assert refused.json()["error"]["code"] == "audit_unavailable" and "results" not in refused.json()
    finally:
        raw_execute(audited.audit_url, "ALTER TABLE audit_records_away RENAME TO audit_records")
    deadline = time.monotonic() + 15
    back = moderate(audited, ["hello there"], "gw-moderation-back", status=None)
    while back.status_code != 200:  # the store is tried again after its back-off
        assert time.monotonic() < deadline, back.text
        time.sleep(0.3)
        back = moderate(audited, ["hello there"], "gw-moderation-back", status=None)
    assert stored(audited, "gw-moderation-down") == []
    assert [r.direction for r in stored(audited, "gw-moderation-back")] == ["moderation"]
    assert verify(audited).ok
