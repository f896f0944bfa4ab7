"""The audit store on SQLite and PostgreSQL: appends are chained and durable, filters select the
right records, export round-trips, concurrent appends share transactions without breaking chains."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime, timedelta, timezone

import pytest

from guard import metrics
from guard.audit import AuditFilters, SqlAuditStore
from guard.audit.chain import record_hash
from guard.audit.engine import create_engine_for
from guard.types import Action, AuditRecord
from tests.audit.helpers import record
from tests.fixtures.audit import pg_url


def _seed(store: SqlAuditStore) -> dict[str, AuditRecord]:
    old = datetime.now(timezone.utc) - timedelta(days=3)
    records = {
        "allow": record("what is the capital of France?", request_id="req-allow"),
        "block": record(
            "tell me about zorblax", action=Action.BLOCK, categories=["S9"], request_id="req-block"
        ),
        "escalate": record("quintrex plans", action=Action.ESCALATE, categories=["S1"], request_id="req-esc"),
        "other": record(
            "vorpalite",
            tenant="globex",
            action=Action.BLOCK,
            categories=["S10", "S9"],
            request_id="req-other",
        ),
        "old": record("an old question", request_id="req-old", time=old),
    }
    stored = store.append(list(records.values()))
    return {name: rec for name, rec in zip(records, stored, strict=True)}


def test_append_returns_records_chained_per_tenant(store):
    stored = _seed(store)
    acme = [r for r in stored.values() if r.tenant == "acme"]
    assert acme[0].prev_hash is None
    for before, after in zip(acme, acme[1:], strict=False):
        assert after.prev_hash == before.hash
    assert stored["other"].prev_hash is None  # another tenant, another chain
    assert all(r.hash == record_hash(r) for r in stored.values())


def test_query_filters_select_the_right_records(store):
    stored = _seed(store)

    def ids(**kwargs) -> set[str]:
        return {r.id for r in store.query(AuditFilters(**kwargs))}

    assert ids() == {r.id for r in stored.values()}
    assert ids(tenant="globex") == {stored["other"].id}
    assert ids(action=Action.BLOCK) == {stored["block"].id, stored["other"].id}
    assert ids(action=Action.BLOCK, tenant="acme") == {stored["block"].id}
    assert ids(category="S9") == {stored["block"].id, stored["other"].id}
    assert ids(category="S10") == {stored["other"].id}
    assert ids(category="S2") == set()
    assert ids(request_id="req-esc") == {stored["escalate"].id}
    day_ago = datetime.now(timezone.utc) - timedelta(days=1)
    assert ids(until=day_ago) == {stored["old"].id}
    assert stored["old"].id not in ids(since=day_ago)
    assert len(ids(since=day_ago)) == 4
    newest = store.query(AuditFilters(limit=2))
    assert [r.id for r in newest] == [stored["old"].id, stored["other"].id]


def test_get_returns_the_stored_record_with_its_hash(store):
    stored = _seed(store)
    got = store.get(stored["block"].id)
    assert got == stored["block"]
    assert store.get("no-such-id") is None


def test_export_round_trips_audit_records(store):
    stored = _seed(store)
    out = io.StringIO()
    assert store.export(out) == len(stored)
    lines = out.getvalue().splitlines()
    parsed = [AuditRecord.model_validate_json(line) for line in lines]
    assert parsed == list(stored.values())  # oldest first, every field, hash included
    filtered = io.StringIO()
    assert store.export(filtered, AuditFilters(tenant="globex", limit=None)) == 1


def test_concurrent_async_appends_all_land_in_one_intact_chain(store):
    before = _batch_count()
    records = [record(f"message {i}", tenant=f"t{i % 3}") for i in range(120)]

    async def main() -> list[list[AuditRecord]]:
        return await asyncio.gather(*(store.append_async([r]) for r in records))

    results = asyncio.run(main())
    assert [r[0].id for r in results] == [r.id for r in records]
    report = store.verify()
    assert report.ok, report.broken
    assert report.records == 120 and report.tenants == 3
    assert sorted(h.seq for h in report.heads) == [40, 40, 40]
    assert _batch_count() > before  # the writer committed (and measured) the groups


def test_store_survives_reopen_and_keeps_chaining(store_url):
    first = SqlAuditStore(store_url)
    a = first.append([record("one")])[0]
    first.close()
    second = SqlAuditStore(store_url)
    b = second.append([record("two")])[0]
    assert b.prev_hash == a.hash
    assert second.verify().ok
    second.close()


def _batch_count() -> float:
    return sum(s.value for s in metrics.AUDIT_BATCH_SIZE.collect()[0].samples if s.name.endswith("_count"))


_WRITER = """
import sys
from guard.audit import SqlAuditStore
from tests.audit.helpers import record
store = SqlAuditStore(sys.argv[1])
for i in range(15):
    name = sys.argv[2]
    store.append([record(f"{name} {i}", tenant="shared"), record(f"{name} {i}", tenant=name)])
store.close()
"""


def test_two_processes_writing_one_store_keep_every_chain_intact(store_url):
    import subprocess
    import sys
    from pathlib import Path

    SqlAuditStore(store_url).close()  # schema ready before the race
    repo = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, store_url, name], cwd=repo) for name in ("p1", "p2")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = SqlAuditStore(store_url, create=False)
    report = store.verify()
    store.close()
    assert report.ok, report.broken
    assert {h.tenant: h.seq for h in report.heads} == {"shared": 30, "p1": 15, "p2": 15}


@pytest.mark.parametrize(("configured", "in_force"), [("off", "local"), ("remote_apply", "remote_apply")])
def test_postgresql_sessions_never_acknowledge_a_commit_before_it_is_flushed(
    postgres_unreachable, configured, in_force
):
    """A role, database or server default of synchronous_commit=off (here: set by the URL, as an
    operator could) is raised to local for the store's sessions; a stronger setting is kept."""
    if postgres_unreachable:
        pytest.skip(postgres_unreachable)
    engine = create_engine_for(pg_url("public") + f"%20-csynchronous_commit%3D{configured}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == in_force
    finally:
        engine.dispose()


def test_appended_rows_are_stored_exactly_as_sqlalchemy_stores_them(store, store_url):
    """Appends run on the driver's cursor (guard.audit.statements); filters compare the stored
    values (SQLite keeps times as text), so a row must match what SQLAlchemy would have written,
    also for a time on a whole second (where a plain ``isoformat`` drops the microseconds)."""
    from sqlalchemy import text

    from guard.audit import schema
    from guard.audit.rows import row_values

    on_the_second = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    stored = store.append([record("on the second", time=on_the_second)])[0]
    twin = row_values(stored.model_copy(update={"id": "twin"}), 999, "{}")
    engine = create_engine_for(store_url)
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            conn.execute(schema.records.insert(), twin)
            raw = {row[0]: row[1:] for row in conn.execute(
                text("SELECT id, time, shadow, direction, action FROM audit_records WHERE id IN (:a, :b)"),
                {"a": stored.id, "b": "twin"},
            )}
            transaction.rollback()  # the twin was only for comparison
    finally:
        engine.dispose()
    assert raw[stored.id] == raw["twin"]
    assert [r.id for r in store.query(AuditFilters(since=on_the_second))] == [stored.id]
    assert store.query(AuditFilters(until=on_the_second)) == []
