"""The review queue: escalations are open items until a verdict, which is itself an audit record in
the tenant's chain, linked to the original."""

from __future__ import annotations

import pytest

from guard.audit import AuditFilters
from guard.audit.review import decide, open_items
from guard.errors import BadInput
from guard.types import Action
from tests.audit.helpers import record


def test_decide_writes_a_linked_review_record(store):
    escalated, blocked, other = store.append(
        [
            record("quintrex?", action=Action.ESCALATE, categories=["S1"]),
            record("zorblax", action=Action.BLOCK, categories=["S9"]),
            record("vorpalite", tenant="globex", action=Action.ESCALATE, categories=["S10"]),
        ]
    )
    assert [r.id for r in open_items(store)] == [escalated.id, other.id]
    assert [r.id for r in open_items(store, tenant="globex")] == [other.id]

    review = decide(store, escalated.id, "overturn", note="a chemistry question", reviewer="ana")
    assert review.direction == "review" and review.ref_id == escalated.id
    assert review.tenant == "acme" and review.request_id == escalated.request_id
    assert review.review == {
        "verdict": "overturn",
        "note": "a chemistry question",
        "reviewer": "ana",
        "original_action": "escalate",
    }
    assert review.decision.action == Action.ALLOW and review.content is None
    assert review.prev_hash == blocked.hash  # next link of the acme chain
    assert store.get(review.id) == review
    assert store.query(AuditFilters(ref_id=escalated.id)) == [review]
    assert [r.id for r in open_items(store)] == [other.id]

    confirmed = decide(store, other.id, "confirm", note="real")
    assert (
        confirmed.decision.action == Action.ESCALATE and confirmed.decision.reasons == other.decision.reasons
    )
    assert open_items(store) == []
    assert store.verify().ok


def test_decide_rejects_what_is_not_an_open_escalation(store):
    escalated, blocked = store.append(
        [
            record("quintrex?", action=Action.ESCALATE, categories=["S1"]),
            record("zorblax", action=Action.BLOCK, categories=["S9"]),
        ]
    )
    with pytest.raises(BadInput, match="not an escalation"):
        decide(store, blocked.id, "confirm")
    with pytest.raises(BadInput, match="no audit record"):
        decide(store, "nope", "confirm")
    with pytest.raises(BadInput, match="no audit record"):
        decide(store, escalated.id, "confirm", tenant="globex")  # another tenant's admin
    with pytest.raises(BadInput, match="verdict"):
        decide(store, escalated.id, "maybe")  # type: ignore[arg-type]
    decide(store, escalated.id, "confirm")
    with pytest.raises(BadInput, match="already reviewed"):
        decide(store, escalated.id, "overturn")
