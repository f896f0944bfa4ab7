"""Tables of the audit store and their ordered migrations (SQLite and PostgreSQL alike).

The body of each record (canonical JSON, see ``guard.audit.chain``) is the truth; the other columns
of ``audit_records`` and the rows of ``audit_record_categories`` are copies kept for filtering and
are checked against the body by ``verify``.

``audit_reviews`` holds one row per reviewed escalation (its id is the key): a review record is
inserted only with its row, in the same transaction, so a second verdict on one escalation is
refused by the store itself, whichever process submits it (see ``guard.audit.review``).

``schema_version`` holds one row: the number of migrations applied. Pending migrations run in
order inside one transaction (DDL is transactional on both backends), under a lock (a PostgreSQL
advisory lock; SQLite's write lock), so several processes may start against the same store at
once. Add a migration by appending to ``MIGRATIONS``; never edit one that has shipped.

1. the records, their category rows, chain heads and prune checkpoints;
2. ``audit_reviews``, filled from the review records already stored: the first review of each
   escalation claims it (a store written before 2 may hold a later duplicate: it stays in the
   chain, unclaimed).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

records = Table(
    "audit_records",
    metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("tenant", String(200), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("time", DateTime(timezone=False), nullable=False),  # UTC, naive
    Column("request_id", String(200), nullable=False),
    Column("api_key_id", String(200)),
    Column("route", String(200), nullable=False),
    Column("direction", String(20), nullable=False),
    Column("action", String(20), nullable=False),
    Column("effective_action", String(20), nullable=False),
    Column("shadow", Boolean, nullable=False),
    Column("guard_status", String(20), nullable=False),
    Column("policy_id", String(200), nullable=False),
    Column("policy_hash", String(128), nullable=False),
    Column("retention", String(20), nullable=False),
    Column("ref_id", String(64)),
    Column("prev_hash", String(64)),
    Column("hash", String(64), nullable=False),
    Column("body", Text, nullable=False),
    UniqueConstraint("tenant", "seq", name="uq_audit_records_tenant_seq"),
    Index("ix_audit_records_tenant_time", "tenant", "time"),
    Index("ix_audit_records_time", "time"),
    Index("ix_audit_records_action_time", "action", "time"),
    Index("ix_audit_records_request_id", "request_id"),
    Index("ix_audit_records_ref_id", "ref_id"),
)

record_categories = Table(
    "audit_record_categories",
    metadata,
    Column("record_id", String(64), nullable=False),
    Column("code", String(64), nullable=False),
    UniqueConstraint("record_id", "code", name="uq_audit_record_categories"),
    Index("ix_audit_record_categories_code", "code", "record_id"),
)

heads = Table(
    "audit_heads",
    metadata,
    Column("tenant", String(200), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("pk", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant", String(200), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    Index("ix_audit_checkpoints_tenant_seq", "tenant", "seq"),
)


reviews = Table(
    "audit_reviews",
    metadata,
    Column("ref_id", String(64), primary_key=True),  # the escalated record
    Column("record_id", String(64), nullable=False),  # its review record
)


def _v1(conn: Connection) -> None:
    for table in (records, record_categories, heads, checkpoints):
        table.create(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    reviews.create(conn)
    first = records.alias("first")
    earliest = (
        select(func.min(first.c.pk))
        .where(first.c.direction == "review", first.c.ref_id == records.c.ref_id)
        .scalar_subquery()
    )
    claims = select(records.c.ref_id, records.c.id).where(
        records.c.direction == "review", records.c.ref_id.is_not(None), records.c.pk == earliest
    )
    conn.execute(reviews.insert().from_select(["ref_id", "record_id"], claims))


MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2]
LATEST = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    row = conn.execute(select(schema_version.c.version)).first()
    return int(row[0]) if row else 0


def migrate(conn: Connection) -> int:
    """Bring the schema up to ``LATEST`` inside the caller's transaction; returns the version."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7041969)"))
    schema_version.create(conn, checkfirst=True)
    version = current_version(conn)
    if version > LATEST:
        raise RuntimeError(f"audit store schema version {version} is newer than this guard ({LATEST})")
    for number in range(version + 1, LATEST + 1):
        MIGRATIONS[number - 1](conn)
    if version == 0:
        conn.execute(schema_version.insert().values(version=LATEST))
    elif version < LATEST:
        conn.execute(schema_version.update().values(version=LATEST))
    return LATEST
