"""When the store is down: with a journal, records are fsynced to it and replayed (in order, chained,
without duplicates) once the store is back; without one, appends fail closed with AuditUnavailable.
Nothing is ever dropped silently."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from guard import metrics
from guard.audit import AuditFilters, SqlAuditStore
from guard.audit.journal import Journal
from guard.errors import AuditUnavailable
from tests.audit.helpers import TcpProxy, record
from tests.fixtures.audit import PG_HOST, PG_PORT, pg_schema, pg_url


def _texts(store: SqlAuditStore) -> list[str]:
    return [r.request_id for r in store.query(AuditFilters(newest_first=False, limit=None))]


def _sink_count(sink: str) -> float:
    return metrics.AUDIT_RECORDS.labels(sink)._value.get()


def test_sqlite_directory_missing_journals_then_replays(tmp_path):
    db_dir = tmp_path / "not-yet"
    journal = Journal(tmp_path / "audit.journal.jsonl")
    store = SqlAuditStore(f"sqlite:///{db_dir / 'audit.sqlite3'}", journal=journal, retry_interval_s=0)
    journaled_before = _sink_count("journal")
    first = store.append([record(request_id="a"), record(request_id="b")])
    assert [r.hash for r in first] == [None, None]  # durable in the journal, chained later
    assert journal.depth == 2 and metrics.AUDIT_JOURNAL_DEPTH._value.get() == 2
    assert _sink_count("journal") == journaled_before + 2
    assert [r.request_id for r in journal.records()] == ["a", "b"]

    db_dir.mkdir()
    third = store.append([record(request_id="c")])[0]
    assert third.hash is not None
    assert _texts(store) == ["a", "b", "c"]  # journal first: chain order is acceptance order
    assert journal.depth == 0 and journal.records() == []
    assert store.verify().ok
    store.close()


def test_sqlite_directory_removed_while_running_is_noticed(tmp_path):
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    journal = Journal(tmp_path / "audit.journal.jsonl")
    store = SqlAuditStore(f"sqlite:///{db_dir / 'audit.sqlite3'}", journal=journal, retry_interval_s=0)
    store.append([record(request_id="before")])
    shutil.rmtree(db_dir)  # the pooled connection still holds the deleted file open
    assert store.append([record(request_id="during")])[0].hash is None
    assert [r.request_id for r in journal.records()] == ["during"]
    db_dir.mkdir()
    store.append([record(request_id="after")])
    assert _texts(store) == ["during", "after"]
    store.close()


def test_without_journal_a_down_store_fails_closed(tmp_path):
    store = SqlAuditStore(f"sqlite:///{tmp_path / 'missing' / 'audit.sqlite3'}", retry_interval_s=0)
    failures_before = metrics.AUDIT_WRITE_FAILURES.labels("store_unavailable")._value.get()
    with pytest.raises(AuditUnavailable, match="does not exist"):
        store.append([record()])
    with pytest.raises(AuditUnavailable):
        asyncio.run(store.append_async([record()]))
    assert metrics.AUDIT_WRITE_FAILURES.labels("store_unavailable")._value.get() == failures_before + 2
    store.close()


def test_an_unwritable_journal_is_an_error_not_a_silent_drop(tmp_path):
    journal = Journal(tmp_path / "no-such-dir" / "audit.journal.jsonl")
    store = SqlAuditStore(f"sqlite:///{tmp_path / 'missing' / 'audit.sqlite3'}", journal=journal)
    with pytest.raises(AuditUnavailable, match="journal"):
        store.append([record()])
    store.close()


def test_replay_skips_records_the_store_already_has(tmp_path):
    """A crash between the store commit and the journal truncation must not duplicate records."""
    journal = Journal(tmp_path / "audit.journal.jsonl")
    store = SqlAuditStore(f"sqlite:///{tmp_path / 'audit.sqlite3'}", journal=journal)
    already = record(request_id="x")
    store.append([already])
    journal.append([already, record(request_id="y")])
    assert store.replay_journal() == 2
    assert _texts(store) == ["x", "y"]
    assert store.verify().ok
    store.close()


def test_a_torn_journal_line_is_set_aside_and_the_rest_replayed(tmp_path):
    journal = Journal(tmp_path / "audit.journal.jsonl")
    journal.append([record(request_id="whole")])
    with open(journal.path, "a", encoding="utf-8") as handle:
        handle.write('{"schema_version": 1, "id": "tor')  # a crash in the middle of a write
    journal.append([record(request_id="later")])
    store = SqlAuditStore(f"sqlite:///{tmp_path / 'audit.sqlite3'}", journal=journal)
    assert store.replay_journal() == 2
    assert _texts(store) == ["whole", "later"]
    assert '"id": "tor' in journal.rejected_path.read_text()
    store.close()


def test_postgresql_going_down_and_coming_back(tmp_path, postgres_unreachable):
    if postgres_unreachable:
        pytest.skip(postgres_unreachable)
    proxy = TcpProxy(PG_HOST, PG_PORT)
    proxy.start()
    journal = Journal(tmp_path / "audit.journal.jsonl")
    with pg_schema() as schema:
        store = SqlAuditStore(pg_url(schema, port=proxy.port), journal=journal, retry_interval_s=0)
        try:
            assert store.append([record(request_id="up")])[0].hash is not None
            proxy.stop()  # connection refused, pooled connections cut
            down = asyncio.run(store.append_async([record(request_id="down-1"), record(request_id="down-2")]))
            assert [r.hash for r in down] == [None, None] and journal.depth == 2
            proxy.start()
            store.append([record(request_id="back")])
            assert _texts(store) == ["up", "down-1", "down-2", "back"]
            assert journal.depth == 0 and store.verify().ok
        finally:
            store.close()
            proxy.stop()


def test_postgresql_closed_port_fails_closed_without_journal(postgres_unreachable):
    if postgres_unreachable:
        pytest.skip(postgres_unreachable)
    proxy = TcpProxy(PG_HOST, PG_PORT)  # never started: its port is closed
    store = SqlAuditStore(pg_url("public", port=proxy.port))
    with pytest.raises(AuditUnavailable, match="unavailable"):
        store.append([record()])
    store.close()


def test_the_journal_is_replayed_without_new_traffic(tmp_path):
    """A store opened over a pending journal (a gateway restarted while the database was down)
    moves it into the database once that is back, with no append to trigger it."""
    import time

    db_dir = tmp_path / "db"
    journal = Journal(tmp_path / "audit.journal.jsonl")
    url = f"sqlite:///{db_dir / 'audit.sqlite3'}"
    first = SqlAuditStore(url, journal=journal)
    first.append([record(request_id="while-down")])
    first.close()
    db_dir.mkdir()
    store = SqlAuditStore(url, journal=Journal(journal.path), replay_interval_s=0.05, retry_interval_s=0)
    deadline = time.monotonic() + 30
    while store.journal.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _texts(store) == ["while-down"] and not store.journal.pending()
    store.close()


def test_a_store_that_is_back_is_retried_under_steady_traffic(store_url):
    """The back-off after a failure lasts ``retry_interval_s`` from that failure: appends refused
    while it runs do not extend it (they used to, so a store written more often than once per
    interval was never tried again: 503s, or a growing journal, for good)."""
    import time

    from tests.audit.helpers import raw_execute

    store = SqlAuditStore(store_url, retry_interval_s=0.5)
    try:
        store.append([record(request_id="up")])
        raw_execute(store_url, "ALTER TABLE audit_records RENAME TO audit_records_away")
        with pytest.raises(AuditUnavailable, match="audit_records"):
            store.append([record(request_id="refused")])
        raw_execute(store_url, "ALTER TABLE audit_records_away RENAME TO audit_records")
        started, stored = time.monotonic(), None
        while stored is None and time.monotonic() - started < 5:
            try:
                stored = store.append([record(request_id="back")])
            except AuditUnavailable as exc:
                assert "back-off" in exc.message  # refused without trying: only while backing off
                time.sleep(0.05)  # an append every 50 ms, 10 per interval
        assert stored is not None and time.monotonic() - started < 1.5
        assert _texts(store) == ["up", "back"] and store.verify().ok
    finally:
        store.close()
