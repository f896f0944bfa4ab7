"""The review queue: records whose action is ``escalate`` wait for a human verdict.

An item is open while no review record points at it, and gets one verdict: the store refuses a
second one (``Conflict``: HTTP 409, CLI exit 2), also when two reviewers on two gateways submit
theirs at the same moment (``audit_reviews``, see ``guard.audit.schema``); while the store is down
a verdict is refused, never journaled. A verdict is itself an audit record in the same tenant's
chain: ``direction="review"``, ``ref_id`` = the escalated record, ``review`` = ``{"verdict",
"note", "reviewer", "original_action"}``, no content (``retention="none"``, the original's content
hash). Its decision keeps the original's policy and direction; the action is
the original one when the verdict is ``confirm`` and ``allow`` when it is ``overturn``.

``guard policy replay`` should skip ``direction == "review"`` records: they carry no guard results.
"""

from __future__ import annotations

from typing import Literal

from guard.audit.record import is_open_escalation, new_record_id
from guard.audit.store import AuditFilters, AuditStore
from guard.errors import BadInput, Conflict
from guard.types import Action, AuditRecord, GuardResults

Verdict = Literal["confirm", "overturn"]
VERDICTS = ("confirm", "overturn")


def open_items(store: AuditStore, tenant: str | None = None, limit: int | None = 100) -> list[AuditRecord]:
    return store.open_escalations(tenant=tenant, limit=limit)


def review_record(
    original: AuditRecord, verdict: Verdict, note: str, reviewer: str | None = None
) -> AuditRecord:
    """The audit record of a reviewer's verdict on ``original`` (not yet stored)."""
    if verdict not in VERDICTS:
        raise BadInput(f"verdict must be confirm or overturn (got {verdict!r})", param="verdict")
    action = original.decision.action if verdict == "confirm" else Action.ALLOW
    decision = original.decision.model_copy(
        update={
            "action": action,
            "effective_action": action,
            "shadow": False,
            "reasons": original.decision.reasons if verdict == "confirm" else [],
            "user_message": None,
        }
    )
    return AuditRecord(
        id=new_record_id(),
        request_id=original.request_id,
        tenant=original.tenant,
        api_key_id=original.api_key_id,
        route=original.route,
        direction="review",
        window_index=original.window_index,
        policy=original.policy,
        results=GuardResults(),
        decision=decision,
        guard_status=original.guard_status,
        content_sha256=original.content_sha256,
        retention="none",
        ref_id=original.id,
        review={
            "verdict": verdict,
            "note": note,
            "reviewer": reviewer,
            "original_action": original.decision.action.value,
        },
    )


def decide(
    store: AuditStore,
    record_id: str,
    verdict: Verdict,
    note: str = "",
    reviewer: str | None = None,
    tenant: str | None = None,
) -> AuditRecord:
    """Record a verdict on an open escalation; returns the stored review record. ``Conflict`` when
    it has one already (found here, or refused by the store when another verdict won the race).

    ``tenant`` restricts the lookup (an HTTP admin key of one tenant must not review another's).
    """
    original = store.get(record_id)
    if original is None or (tenant is not None and original.tenant != tenant):
        raise BadInput(f"no audit record {record_id!r}", param="id")
    if not is_open_escalation(original):
        raise BadInput(
            f"record {record_id} is not an escalation (action {original.decision.action.value}, "
            f"direction {original.direction})",
            param="id",
        )
    earlier = store.query(AuditFilters(ref_id=record_id, direction="review", limit=1))
    if earlier:
        raise Conflict(f"record {record_id} was already reviewed (review record {earlier[0].id})", param="id")
    return store.append([review_record(original, verdict, note, reviewer)])[0]
