"""The audit store: the ``AuditStore`` protocol and its SQL implementation (SQLite or PostgreSQL).

``append`` returns (or its ``append_async`` twin resolves) only once the records are durable: committed
in the store, or, when the store is down and a journal is configured, fsynced to the journal (see
``guard.audit.journal``). Without a journal a store that is down raises ``AuditUnavailable``
(fail closed). Appends from many threads or tasks are grouped into one transaction by a writer
thread (``guard.audit.writer``), and each record is chained to its tenant's previous one
(``guard.audit.chain``) inside that transaction, under a lock on the tenant's head row, so several
processes may write to one store.

After a failure the store is left alone for ``retry_interval_s`` (records go straight to the
journal), then tried again; the first successful transaction replays the journal first, so chain
order is acceptance order. Without traffic, the writer thread retries the replay every
``replay_interval_s``; a store opened over a non-empty journal replays it the same way.

A review record claims its escalation (``audit_reviews``) in the transaction that inserts it: a
second verdict on the same escalation is refused with ``Conflict``, also when two processes submit
theirs at the same moment. Reviews are never journaled (only the store can tell whether the
escalation already has a verdict): while the store is down they fail with ``AuditUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import time as _time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, TextIO, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, and_, exists, func, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from guard import metrics
from guard.audit import schema
from guard.audit.chain import Checkpoint, link, seal, with_hash
from guard.audit.engine import IMMEDIATE, create_engine_for, create_sqlite_file, sqlite_path
from guard.audit.journal import Journal
from guard.audit.rows import category_rows, naive_utc, row_values
from guard.audit.statements import AppendStatements, driver_cursor
from guard.audit.verify import VerifyReport, latest_checkpoint, verify_all, verify_tenant
from guard.audit.writer import Batch, GroupCommitWriter
from guard.errors import AuditUnavailable, Conflict
from guard.types import Action, AuditDirection, AuditRecord

log = logging.getLogger(__name__)

WAIT_LIMIT_S = 120.0  # a caller never waits longer than this for its commit
PAGE = 1000


class AuditFilters(BaseModel):
    """Filters of ``query`` and ``export``; all optional, combined with AND."""

    model_config = ConfigDict(extra="forbid")

    tenant: str | None = None
    action: Action | None = None  # the policy's action (shadow decisions included)
    category: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    request_id: str | None = None
    direction: AuditDirection | None = None
    ref_id: str | None = None
    limit: int | None = Field(default=100, ge=1)
    newest_first: bool = True


class PruneReport(BaseModel):
    pruned: dict[str, int] = Field(default_factory=dict)
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


@runtime_checkable
class AuditStore(Protocol):
    def append(self, records: Sequence[AuditRecord]) -> list[AuditRecord]: ...

    async def append_async(self, records: Sequence[AuditRecord]) -> list[AuditRecord]: ...

    def query(self, filters: AuditFilters | None = None) -> list[AuditRecord]: ...

    def get(self, record_id: str) -> AuditRecord | None: ...

    def open_escalations(self, tenant: str | None = None, limit: int | None = 100) -> list[AuditRecord]: ...

    def verify(self) -> VerifyReport: ...

    def export(self, out: TextIO, filters: AuditFilters | None = None) -> int: ...

    def prune(self, older_than: datetime) -> PruneReport: ...

    def close(self) -> None: ...


class _Down(Exception):
    """The store cannot be reached or written (as opposed to a record it refuses)."""


class SqlAuditStore:
    """``AuditStore`` on SQLite (``sqlite:///path``) or PostgreSQL (``postgresql+psycopg://...``)."""

    def __init__(
        self,
        url: str,
        *,
        journal: Journal | Path | None = None,
        signing_key: bytes | str | None = None,
        create: bool = True,
        max_group_records: int = 1000,
        retry_interval_s: float = 1.0,
        replay_interval_s: float = 5.0,
    ) -> None:
        self.url = url
        self._engine = create_engine_for(url)
        self._statements = AppendStatements(self._engine.dialect)
        # A refused record, and a store that failed: SQLAlchemy's errors and the driver's own
        # (appends run on the driver's cursor, see guard.audit.statements).
        self._refused = (IntegrityError, self._statements.errors.integrity)
        self._failed = (SQLAlchemyError, OSError, self._statements.errors.any)
        self._sqlite = sqlite_path(url)
        self._create = create
        self._journal = Journal(journal) if isinstance(journal, (str, Path)) else journal
        self._key = signing_key.encode() if isinstance(signing_key, str) else signing_key
        self._retry_interval = retry_interval_s
        self._down_until = 0.0
        self._ready = False
        self._writer = GroupCommitWriter(
            self._commit_group,
            max_records=max_group_records,
            idle=self._idle_replay,
            idle_interval_s=replay_interval_s,
        )
        if create:
            try:
                self._ensure_schema()
            except AuditUnavailable as exc:  # a store that is down at start-up is not fatal
                log.warning("audit store not available yet: %s", exc.message)
        if self._journal is not None and self._journal.pending():
            self._writer.start()  # replays the journal on its first idle tick

    @property
    def journal(self) -> Journal | None:
        return self._journal

    # ------------------------------------------------------------------ appends

    def append(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        """Store ``records`` durably; returns them chained (unchained when they went to the journal)."""
        if not records:
            return []
        future = self._writer.submit(records)
        try:
            return future.result(timeout=WAIT_LIMIT_S)
        except TimeoutError:
            raise AuditUnavailable(f"audit write not confirmed within {WAIT_LIMIT_S:.0f} s") from None

    async def append_async(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        """``append`` for the event loop: awaits the group commit without blocking the loop."""
        if not records:
            return []
        future = asyncio.wrap_future(self._writer.submit(records))
        try:
            return await asyncio.wait_for(asyncio.shield(future), WAIT_LIMIT_S)
        except TimeoutError:
            raise AuditUnavailable(f"audit write not confirmed within {WAIT_LIMIT_S:.0f} s") from None

    def replay_journal(self) -> int:
        """Move journaled records into the store now; returns how many were replayed."""
        if self._journal is None:
            return 0
        with _wrap_errors("replay the journal", self._failed):
            self._ensure_schema()
            return self._journal.replay(self._commit_replayed)

    def _idle_replay(self) -> None:
        """Writer-thread chore: replay a pending journal once the store answers again."""
        if self._journal is None or not self._journal.pending() or _time.monotonic() < self._down_until:
            return
        try:
            self._ensure_schema_or_down()
            self._replay_or_down()
        except _Down as exc:
            self._down_until = _time.monotonic() + self._retry_interval
            self._ready = False
            log.info("audit journal not replayed yet: %s", exc)

    def _commit_group(self, batches: list[Batch]) -> list[Batch | BaseException]:
        started = _time.perf_counter()
        if _time.monotonic() < self._down_until:  # backing off: not a new failure, the clock runs on
            return self._fallback(batches, "the store failed recently; retrying after the back-off interval")
        try:
            self._ensure_schema_or_down()
            if self._journal is not None and self._journal.pending():
                self._replay_or_down()
            outcomes = self._insert_batches(batches)
        except _Down as exc:
            self._down_until = _time.monotonic() + self._retry_interval
            self._ready = False
            return self._fallback(batches, str(exc))
        metrics.AUDIT_WRITE_SECONDS.observe(_time.perf_counter() - started)
        metrics.AUDIT_BATCH_SIZE.observe(sum(len(b) for b in batches))
        stored = sum(len(o) for o in outcomes if not isinstance(o, BaseException))
        metrics.AUDIT_RECORDS.labels("store").inc(stored)
        return outcomes

    def _fallback(self, batches: list[Batch], why: str) -> list[Batch | BaseException]:
        metrics.AUDIT_WRITE_FAILURES.labels("store_unavailable").inc()
        error = AuditUnavailable(f"audit store unavailable: {why}")
        if self._journal is None:
            return [error] * len(batches)
        flat = [r for b in batches if not _review_refs(b) for r in b]  # reviews: the store or nothing
        if flat:
            try:
                self._journal.append(flat)
            except AuditUnavailable as exc:
                metrics.AUDIT_WRITE_FAILURES.labels("journal_unavailable").inc()
                return [exc] * len(batches)
            metrics.AUDIT_RECORDS.labels("journal").inc(len(flat))
            log.warning("audit store unavailable (%s): %d record(s) journaled to %s",
                        why, len(flat), self._journal.path)
        return [error if _review_refs(b) else b for b in batches]

    def _insert_batches(self, batches: list[Batch]) -> list[Batch | BaseException]:
        try:
            with self._write() as conn:
                chained = _chain_and_insert(conn, self._statements, [r for b in batches for r in b])
        except self._refused:
            return [self._insert_alone(b) for b in batches]  # find the batch the store refuses
        except self._failed as exc:
            raise _Down(_short(exc)) from exc
        out, start = [], 0
        for batch in batches:
            out.append(chained[start : start + len(batch)])
            start += len(batch)
        return out

    def _insert_alone(self, batch: Batch) -> Batch | BaseException:
        try:
            with self._write() as conn:
                return _chain_and_insert(conn, self._statements, batch)
        except self._refused as exc:
            conflict = self._review_conflict(batch)
            if conflict is not None:
                return conflict
            metrics.AUDIT_WRITE_FAILURES.labels("rejected").inc()
            return AuditUnavailable(f"audit store refused the record(s) (duplicate id?): {_short(exc)}")
        except self._failed as exc:
            return AuditUnavailable(f"audit store unavailable: {_short(exc)}")

    def _review_conflict(self, batch: Batch) -> Conflict | None:
        """The refusal of a review whose escalation another review has already claimed, if that is
        why ``batch`` was refused."""
        refs = _review_refs(batch)
        if not refs:
            return None
        table = schema.reviews
        try:
            with _txn(self._engine, immediate=False, wrap=False) as conn:
                taken = conn.execute(
                    select(table.c.ref_id, table.c.record_id).where(table.c.ref_id.in_(refs))
                ).first()
        except (SQLAlchemyError, OSError):
            return None
        if taken is None:
            return None
        return Conflict(
            f"record {taken.ref_id} was already reviewed (review record {taken.record_id})", param="id"
        )

    def _replay_or_down(self) -> None:
        try:
            count = self._journal.replay(self._commit_replayed)  # type: ignore[union-attr]
        except (*self._failed, AuditUnavailable) as exc:
            raise _Down(f"journal replay failed: {_short(exc)}") from exc
        if count:
            log.warning("audit journal replayed: %d record(s) moved into the store", count)

    def _commit_replayed(self, records: list[AuditRecord]) -> None:
        with self._write() as conn:
            table = schema.records
            present = set(
                conn.execute(select(table.c.id).where(table.c.id.in_([r.id for r in records]))).scalars()
            )
            # a review journaled before reviews claimed their escalation is kept even if another
            # claimed it first: it was acknowledged, and the chain keeps what happened
            _chain_and_insert(conn, self._statements, [r for r in records if r.id not in present],
                              claim_if_free=True)
        metrics.AUDIT_RECORDS.labels("store").inc(len(records) - len(present))

    # ------------------------------------------------------------------ reads

    def query(self, filters: AuditFilters | None = None) -> list[AuditRecord]:
        filters = filters or AuditFilters()
        stmt = _filtered(_BODY, filters)
        stmt = stmt.order_by(schema.records.c.pk.desc() if filters.newest_first else schema.records.c.pk)
        if filters.limit is not None:
            stmt = stmt.limit(filters.limit)
        with self._read() as conn:
            return [_record(row) for row in conn.execute(stmt)]

    def get(self, record_id: str) -> AuditRecord | None:
        with self._read() as conn:
            row = conn.execute(_BODY.where(schema.records.c.id == record_id)).first()
        return _record(row) if row else None

    def open_escalations(self, tenant: str | None = None, limit: int | None = 100) -> list[AuditRecord]:
        """Escalated records no review record points at yet (oldest first)."""
        table = schema.records
        reviews = table.alias("reviews")
        stmt = _BODY.where(
            table.c.action == Action.ESCALATE.value,
            table.c.direction != "review",
            ~exists().where(and_(reviews.c.ref_id == table.c.id, reviews.c.direction == "review")),
        )
        if tenant is not None:
            stmt = stmt.where(table.c.tenant == tenant)
        stmt = stmt.order_by(table.c.pk).limit(limit)
        with self._read() as conn:
            return [_record(row) for row in conn.execute(stmt)]

    def export(self, out: TextIO, filters: AuditFilters | None = None) -> int:
        """Write matching records as JSONL (oldest first), the format ``guard policy replay`` reads."""
        count = 0
        for row in self._iter_rows(filters or AuditFilters(limit=None)):
            out.write(with_hash(row.body, row.hash) + "\n")
            count += 1
        return count

    def _iter_rows(self, filters: AuditFilters) -> Iterator:
        table, last, left = schema.records, 0, filters.limit
        while left is None or left > 0:
            size = PAGE if left is None else min(PAGE, left)
            stmt = _filtered(select(table.c.pk, table.c.body, table.c.hash), filters).where(table.c.pk > last)
            with self._read() as conn:
                page = conn.execute(stmt.order_by(table.c.pk).limit(size)).all()
            if not page:
                return
            yield from page
            last = page[-1].pk
            left = None if left is None else left - len(page)

    def verify(self) -> VerifyReport:
        with self._read() as conn:
            return verify_all(conn, self._key)

    # ------------------------------------------------------------------ prune

    def prune(self, older_than: datetime) -> PruneReport:
        """Delete each tenant's records older than ``older_than`` (a prefix of its chain) and leave a
        sealed checkpoint of the last one removed. Records at or after the cutoff are never removed
        (when a later record carries an earlier time, the prefix stops before it). Refuses to prune a
        chain that does not verify, so pruning never hides an alteration."""
        cutoff = naive_utc(older_than)
        report = PruneReport()
        if self._key is None:
            report.warnings.append("no GUARD_AUDIT_SIGNING_KEY: the checkpoint is hashed but not signed")
        with self._read() as conn:
            tenants = list(conn.execute(select(schema.heads.c.tenant)).scalars())
        for tenant in tenants:
            checkpoint = self._prune_tenant(tenant, cutoff)
            if checkpoint is not None:
                report.pruned[tenant] = checkpoint.pruned
                report.checkpoints.append(checkpoint)
        return report

    def _prune_tenant(self, tenant: str, cutoff: datetime) -> Checkpoint | None:
        table, cats = schema.records, schema.record_categories
        with _wrap_errors("prune"), self._write() as conn:
            head = conn.execute(
                select(schema.heads).where(schema.heads.c.tenant == tenant).with_for_update()
            ).one()
            previous = latest_checkpoint(conn, tenant)
            floor = previous.seq if previous else 0
            first_kept = conn.execute(
                select(func.min(table.c.seq)).where(table.c.tenant == tenant, table.c.time >= cutoff)
            ).scalar()
            last_pruned = (first_kept - 1) if first_kept is not None else head.seq
            if last_pruned <= floor:
                return None
            checked = verify_tenant(conn, head, self._key)
            if checked.broken:
                raise AuditUnavailable(
                    f"refusing to prune a chain that does not verify: {checked.broken.describe()}"
                )
            last = conn.execute(
                select(table.c.id, table.c.hash).where(table.c.tenant == tenant, table.c.seq == last_pruned)
            ).one()
            doomed = select(table.c.id).where(table.c.tenant == tenant, table.c.seq <= last_pruned)
            conn.execute(cats.delete().where(cats.c.record_id.in_(doomed)))
            conn.execute(schema.reviews.delete().where(schema.reviews.c.record_id.in_(doomed)))
            removed = conn.execute(
                table.delete().where(table.c.tenant == tenant, table.c.seq <= last_pruned)
            ).rowcount
            checkpoint = seal(
                Checkpoint(
                    tenant=tenant,
                    seq=last_pruned,
                    record_id=last.id,
                    hash=last.hash,
                    pruned=removed,
                    time=datetime.now(timezone.utc),
                ),
                self._key,
            )
            conn.execute(
                schema.checkpoints.insert().values(
                    tenant=tenant, seq=last_pruned, body=checkpoint.model_dump_json()
                )
            )
        return checkpoint

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._writer.close()
        self._engine.dispose()

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with _wrap_errors("open"):
            if self._sqlite is not None and not self._sqlite.exists():
                if not self._create:
                    raise AuditUnavailable(f"no audit store at {self._sqlite}")
                if not self._sqlite.parent.is_dir():
                    raise AuditUnavailable(
                        f"directory {self._sqlite.parent} of the audit store does not exist"
                    )
                create_sqlite_file(self._sqlite)
            with self._engine.connect().execution_options(**{IMMEDIATE: True}) as conn, conn.begin():
                if self._create:
                    schema.migrate(conn)
                elif schema.current_version(conn) != schema.LATEST:
                    raise AuditUnavailable(
                        "the audit store schema is missing or outdated; open it once "
                        "with a gateway or a write to migrate it"
                    )
        self._ready = True

    def _ensure_schema_or_down(self) -> None:
        try:
            self._ensure_schema()
        except AuditUnavailable as exc:
            raise _Down(exc.message) from exc

    def _write(self):
        return _txn(self._engine, immediate=True, wrap=False)

    def _read(self):
        self._ensure_schema()
        return _txn(self._engine, immediate=False, wrap=True)


@contextmanager
def _txn(engine, *, immediate: bool, wrap: bool) -> Iterator[Connection]:
    """A connection inside a transaction, committed when the block succeeds. With ``wrap``, driver
    errors become ``AuditUnavailable`` (for callers outside the writer)."""
    try:
        with engine.connect().execution_options(**{IMMEDIATE: immediate}) as conn, conn.begin():
            yield conn
    except (SQLAlchemyError, OSError) as exc:
        if wrap:
            raise AuditUnavailable(f"audit store unavailable: {_short(exc)}") from exc
        raise


@contextmanager
def _wrap_errors(
    what: str, errors: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError)
) -> Iterator[None]:
    try:
        yield
    except errors as exc:
        raise AuditUnavailable(f"audit store unavailable ({what}): {_short(exc)}") from exc


def _chain_and_insert(
    conn: Connection, statements: AppendStatements, records: list[AuditRecord], *, claim_if_free: bool = False
) -> list[AuditRecord]:
    """Chain ``records`` after their tenants' heads and insert them (caller holds the transaction);
    each review record claims its escalation: a claimed escalation raises the driver's integrity
    error, or with ``claim_if_free`` (journal replay) leaves the claim where it is."""
    if not records:
        return []
    cursor = driver_cursor(conn)
    tenants = sorted({r.tenant for r in records})
    statements.ensure_heads(cursor, tenants)
    state = {tenant: (seq, hash_ or None, record_id)
             for tenant, seq, hash_, record_id in statements.lock_heads(cursor, tenants)}
    chained, rows, categories = [], [], []
    for record in records:
        seq, prev_hash, _ = state[record.tenant]
        linked, body = link(record, prev_hash)
        rows.append(row_values(linked, seq + 1, body))
        categories.extend(category_rows(linked))
        state[record.tenant] = (seq + 1, linked.hash, linked.id)
        chained.append(linked)
    statements.insert_records(cursor, rows)
    statements.insert_categories(cursor, categories)
    statements.set_heads(cursor, [{"t": t, "s": s, "h": h, "r": r} for t, (s, h, r) in state.items()])
    claims = [{"ref_id": r.ref_id, "record_id": r.id} for r in records
              if r.direction == "review" and r.ref_id]
    if claims and claim_if_free:
        conn.execute(_CLAIM_IF_FREE, claims)
    else:
        statements.claim(cursor, claims)
    return chained


def _review_refs(batch: Sequence[AuditRecord]) -> list[str]:
    return [r.ref_id for r in batch if r.direction == "review" and r.ref_id]


# Journal replay claims an escalation only if no review claimed it yet (rare: through SQLAlchemy).
_CLAIM_IF_FREE = text(
    f"INSERT INTO {schema.reviews.name} (ref_id, record_id) VALUES (:ref_id, :record_id) "
    "ON CONFLICT (ref_id) DO NOTHING"
)
_BODY = select(schema.records.c.body, schema.records.c.hash)


def _record(row) -> AuditRecord:
    record = AuditRecord.model_validate_json(row.body)
    record.hash = row.hash
    return record


def _filtered(stmt, filters: AuditFilters):
    table = schema.records
    if filters.tenant is not None:
        stmt = stmt.where(table.c.tenant == filters.tenant)
    if filters.action is not None:
        stmt = stmt.where(table.c.action == Action(filters.action).value)
    if filters.direction is not None:
        stmt = stmt.where(table.c.direction == filters.direction)
    if filters.request_id is not None:
        stmt = stmt.where(table.c.request_id == filters.request_id)
    if filters.ref_id is not None:
        stmt = stmt.where(table.c.ref_id == filters.ref_id)
    if filters.since is not None:
        stmt = stmt.where(table.c.time >= naive_utc(filters.since))
    if filters.until is not None:
        stmt = stmt.where(table.c.time < naive_utc(filters.until))
    if filters.category is not None:
        cats = schema.record_categories
        stmt = stmt.where(table.c.id.in_(select(cats.c.record_id).where(cats.c.code == filters.category)))
    return stmt


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_store(url: str | None = None, *, settings=None, create: bool = True) -> SqlAuditStore:
    """The store configured by ``GUARD_AUDIT_*`` settings (``url`` overrides ``GUARD_AUDIT_URL``):
    with a journal when ``GUARD_AUDIT_ON_FAILURE=journal``, fail-closed otherwise."""
    from guard.settings import get_settings

    settings = settings or get_settings()
    key = settings.audit_signing_key.get_secret_value() if settings.audit_signing_key else None
    journal = settings.audit_journal if settings.audit_on_failure == "journal" else None
    return SqlAuditStore(url or settings.audit_url, journal=journal, signing_key=key or None, create=create)
