"""Walk each tenant's hash chain and name the first record that breaks it.

A tenant's chain is intact when, in sequence order starting after its latest checkpoint (or at 1):
every body parses, its recomputed hash equals the stored one, its ``prev_hash`` is the hash of the
record before it (or the checkpoint's), no sequence number is missing, every filter column and
category row agrees with the body, and the last record is the tenant's recorded head (so deleting
the newest records is detected too). Checkpoints must carry an intact digest and, when a key is
configured, a valid signature.

The chain proves the log was not altered record by record; a forger who rewrites a whole chain
*and* the heads table can only be caught with a signing key on checkpoints or by comparing the head
hash with a copy kept elsewhere (``guard audit verify --json`` prints the heads).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, select

from guard.audit import schema
from guard.audit.chain import Checkpoint, check_seal, hash_text
from guard.audit.rows import category_rows, mismatched_columns
from guard.types import AuditRecord

PAGE = 1000


class BrokenRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str
    record_id: str | None
    seq: int | None
    reason: str

    def describe(self) -> str:
        where = f"record {self.record_id}" if self.record_id else "chain"
        seq = f" (seq {self.seq})" if self.seq is not None else ""
        return f"tenant {self.tenant!r}: {where}{seq}: {self.reason}"


class TenantHead(BaseModel):
    tenant: str
    seq: int
    record_id: str
    hash: str


class VerifyReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    records: int = 0
    tenants: int = 0
    broken: list[BrokenRecord] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    heads: list[TenantHead] = Field(default_factory=list)


class TenantResult(BaseModel):
    records: int = 0
    broken: BrokenRecord | None = None
    warnings: list[str] = Field(default_factory=list)


def verify_all(conn: Connection, key: bytes | None) -> VerifyReport:
    head_rows = conn.execute(select(schema.heads).order_by(schema.heads.c.tenant)).all()
    orphans = (
        conn.execute(
            select(schema.records.c.tenant)
            .distinct()
            .where(schema.records.c.tenant.not_in(select(schema.heads.c.tenant)))
        )
        .scalars()
        .all()
    )
    report = VerifyReport(ok=True, tenants=len(head_rows))
    for head in head_rows:
        result = verify_tenant(conn, head, key)
        report.records += result.records
        report.warnings.extend(result.warnings)
        if result.broken:
            report.broken.append(result.broken)
        if head.seq > 0:
            report.heads.append(
                TenantHead(tenant=head.tenant, seq=head.seq, record_id=head.record_id, hash=head.hash)
            )
    for tenant in orphans:
        report.broken.append(
            BrokenRecord(
                tenant=tenant,
                record_id=None,
                seq=None,
                reason="records exist but the tenant has no chain head",
            )
        )
    report.ok = not report.broken
    return report


def latest_checkpoint(conn: Connection, tenant: str) -> Checkpoint | None:
    body = conn.execute(
        select(schema.checkpoints.c.body)
        .where(schema.checkpoints.c.tenant == tenant)
        .order_by(schema.checkpoints.c.seq.desc())
        .limit(1)
    ).scalar()
    return Checkpoint.model_validate_json(body) if body else None


def verify_tenant(conn: Connection, head: Any, key: bytes | None) -> TenantResult:
    """Walk one tenant; ``head`` is its ``audit_heads`` row."""
    tenant = head.tenant
    result = TenantResult()

    def broken(record_id: str | None, seq: int | None, reason: str) -> TenantResult:
        result.broken = BrokenRecord(tenant=tenant, record_id=record_id, seq=seq, reason=reason)
        return result

    checkpoint = latest_checkpoint(conn, tenant)
    prev_hash, prev_seq, prev_id = None, 0, None
    if checkpoint is not None:
        intact, warning = check_seal(checkpoint, key)
        if warning:
            result.warnings.append(warning)
        if not intact:
            return broken(checkpoint.record_id, checkpoint.seq, "checkpoint digest or signature is invalid")
        prev_hash, prev_seq, prev_id = checkpoint.hash, checkpoint.seq, checkpoint.record_id
    for row, codes in _rows(conn, tenant, prev_seq):
        if row.seq != prev_seq + 1:
            missing = (
                f"seq {prev_seq + 1}" if row.seq == prev_seq + 2 else f"seq {prev_seq + 1}..{row.seq - 1}"
            )
            return broken(
                row.id,
                row.seq,
                f"record(s) {missing} before it are missing (previous record present: {prev_id or 'none'})",
            )
        problem = _check_row(row, codes, prev_hash)
        if problem:
            return broken(row.id, row.seq, problem)
        prev_hash, prev_seq, prev_id = row.hash, row.seq, row.id
        result.records += 1
    if head.seq != prev_seq or (head.seq > 0 and head.hash != prev_hash):
        return broken(
            head.record_id,
            head.seq,
            f"the chain head is missing: last record present is seq {prev_seq} ({prev_id or 'none'})",
        )
    return result


def _check_row(row: Any, codes: list[str], prev_hash: str | None) -> str | None:
    if hash_text(row.body) != row.hash:
        return "record altered: the hash of its body differs from its stored hash"
    try:
        record = AuditRecord.model_validate_json(row.body)
    except ValueError as exc:
        return f"body is not a valid audit record: {str(exc).splitlines()[0]}"
    record.hash = row.hash
    if record.prev_hash != prev_hash:
        return "prev_hash does not match the hash of the previous record (a record was removed or replaced)"
    bad = mismatched_columns(record, row)
    if bad:
        return f"column(s) {', '.join(bad)} differ from the hashed body"
    if sorted(c["code"] for c in category_rows(record)) != codes:
        return "category index rows differ from the hashed body"
    return None


def _rows(conn: Connection, tenant: str, after_seq: int) -> Iterator[tuple[Any, list[str]]]:
    """(row, sorted category codes) in seq order, a page at a time."""
    table, cats = schema.records, schema.record_categories
    last = after_seq
    while True:
        page = conn.execute(
            select(table)
            .where(table.c.tenant == tenant, table.c.seq > last)
            .order_by(table.c.seq)
            .limit(PAGE)
        ).all()
        if not page:
            return
        ids = [row.id for row in page]
        codes: dict[str, list[str]] = {}
        for record_id, code in conn.execute(
            select(cats.c.record_id, cats.c.code).where(cats.c.record_id.in_(ids))
        ):
            codes.setdefault(record_id, []).append(code)
        for row in page:
            yield row, sorted(codes.get(row.id, []))
        last = page[-1].seq
