"""The mapping between an ``AuditRecord`` and its row (body plus the columns copied for filtering)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from guard.audit.record import record_categories
from guard.types import AuditRecord


def naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def row_values(record: AuditRecord, seq: int, body: str) -> dict[str, Any]:
    """Column values of a chained record (``hash`` set) whose canonical text is ``body``."""
    decision = record.decision
    return {
        "id": record.id,
        "tenant": record.tenant,
        "seq": seq,
        "time": naive_utc(record.time),
        "request_id": record.request_id,
        "api_key_id": record.api_key_id,
        "route": record.route,
        "direction": record.direction,
        "action": decision.action.value,
        "effective_action": decision.effective_action.value,
        "shadow": decision.shadow,
        "guard_status": record.guard_status,
        "policy_id": record.policy.id,
        "policy_hash": record.policy.hash,
        "retention": record.retention,
        "ref_id": record.ref_id,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
        "body": body,
    }


def category_rows(record: AuditRecord) -> list[dict[str, str]]:
    return [{"record_id": record.id, "code": code} for code in record_categories(record)]


def mismatched_columns(record: AuditRecord, row: Any) -> list[str]:
    """Columns of ``row`` (a result row with the table's columns) that disagree with the body."""
    expected = row_values(record, row.seq, row.body)
    bad = []
    for name, value in expected.items():
        if name == "body":
            continue
        actual = getattr(row, name)
        if name == "time" and isinstance(actual, datetime):
            actual = naive_utc(actual)
        if name == "shadow":
            actual = bool(actual)
        if actual != value:
            bad.append(name)
    return bad
