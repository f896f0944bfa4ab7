"""The review queue: escalations are open items until a verdict, which is itself an audit record in
the tenant's chain, linked to the original; the store takes one verdict per escalation, also from
two gateways at the same moment, and from a store migrated from schema 1."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from guard.audit import AuditFilters, SqlAuditStore
from guard.audit.journal import Journal
from guard.audit.review import decide, open_items, review_record
from guard.errors import AuditUnavailable, BadInput, Conflict
from guard.types import Action
from tests.audit.helpers import raw_execute, record


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
    with pytest.raises(Conflict, match="already reviewed"):
        decide(store, escalated.id, "overturn")


class _AtTheSameMoment:
    """A store whose ``append`` waits until the other reviewer's decide reaches its own: both have
    looked for an earlier verdict and found none before either writes (the race, every time)."""

    def __init__(self, store: SqlAuditStore, barrier: threading.Barrier) -> None:
        self._store, self._barrier = store, barrier

    def append(self, records):
        self._barrier.wait(timeout=30)
        return self._store.append(records)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def test_two_verdicts_at_the_same_moment_from_two_gateways_store_one(store_url):
    """Two stores on one database (two gateways), one thread each, deciding the same escalations
    at once: each time exactly one verdict is stored and the other reviewer gets ``Conflict``."""
    first, second = SqlAuditStore(store_url), SqlAuditStore(store_url)
    try:
        escalations = first.append([record(f"quintrex {i}?", action=Action.ESCALATE, categories=["S1"])
                                    for i in range(3)])
        for escalated in escalations:
            barrier = threading.Barrier(2)
            with ThreadPoolExecutor(2) as pool:
                futures = [pool.submit(decide, _AtTheSameMoment(gateway, barrier), escalated.id, verdict)
                           for gateway, verdict in ((first, "confirm"), (second, "overturn"))]
            outcomes = [f.exception() or f.result() for f in futures]
            [stored] = [o for o in outcomes if not isinstance(o, BaseException)]
            [refused] = [o for o in outcomes if isinstance(o, BaseException)]
            assert isinstance(refused, Conflict) and f"review record {stored.id}" in refused.message, refused
            assert [r.id for r in first.query(AuditFilters(ref_id=escalated.id))] == [stored.id]
        assert open_items(second) == [] and first.verify().ok
    finally:
        first.close()
        second.close()


def test_a_verdict_is_refused_not_journaled_while_the_store_is_down(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = SqlAuditStore(url, journal=tmp_path / "audit.journal.jsonl", retry_interval_s=0)
    try:
        [escalated] = store.append([record("quintrex?", action=Action.ESCALATE, categories=["S1"])])
        raw_execute(url, "ALTER TABLE audit_records RENAME TO audit_records_away")
        with pytest.raises(AuditUnavailable):
            decide(store, escalated.id, "confirm")
        assert store.append([record(request_id="journaled")])[0].hash is None  # others still journal
        assert [r.request_id for r in store.journal.records()] == ["journaled"]
        raw_execute(url, "ALTER TABLE audit_records_away RENAME TO audit_records")
        assert decide(store, escalated.id, "confirm").ref_id == escalated.id
    finally:
        store.close()


def test_migration_from_schema_1_claims_the_first_verdict_of_each_escalation(store_url, tmp_path):
    """A store written by schema 1 (no ``audit_reviews``; the race could store two verdicts on one
    escalation) is migrated when opened: the first verdict of each escalation claims it, a later
    duplicate stays in the chain unclaimed, and every new verdict on either is a ``Conflict``."""
    journal = Journal(tmp_path / "audit.journal.jsonl")
    old = SqlAuditStore(store_url, journal=journal)
    twice, once, open_ = old.append(
        [record(f"quintrex {i}?", action=Action.ESCALATE, categories=["S1"]) for i in range(3)]
    )
    first = decide(old, twice.id, "confirm")
    decide(old, once.id, "overturn")
    # the duplicate the race used to store (here through a journal written before verdicts were
    # refused while the store was down: its replay keeps it, unclaimed, and does not get stuck)
    journal.append([review_record(twice, "overturn", "second reviewer")])
    assert old.replay_journal() == 1
    old.close()
    raw_execute(store_url, "DROP TABLE audit_reviews")  # what schema 2 adds
    raw_execute(store_url, "UPDATE schema_version SET version = 1")

    store = SqlAuditStore(store_url)
    try:
        assert raw_execute(store_url, "SELECT version FROM schema_version") == [(2,)]
        reviews = store.query(AuditFilters(direction="review", newest_first=False))
        assert [r.ref_id for r in reviews] == [twice.id, once.id, twice.id]  # the legacy duplicate
        claimed = dict(raw_execute(store_url, "SELECT ref_id, record_id FROM audit_reviews"))
        assert claimed == {twice.id: first.id, once.id: reviews[1].id}
        for escalated in (twice, once):
            with pytest.raises(Conflict, match="already reviewed"):
                decide(store, escalated.id, "overturn")
        assert [r.id for r in open_items(store)] == [open_.id]
        decide(store, open_.id, "confirm")
        with pytest.raises(Conflict):
            decide(store, open_.id, "confirm")
        assert store.verify().ok
    finally:
        store.close()


def test_pruning_a_reviewed_escalation_drops_its_claim(store):
    [escalated] = store.append([record("quintrex?", action=Action.ESCALATE, categories=["S1"])])
    decide(store, escalated.id, "confirm")
    report = store.prune(datetime.now(timezone.utc) + timedelta(days=1))
    assert report.pruned == {"acme": 2}
    assert raw_execute(store.url, "SELECT ref_id FROM audit_reviews") == [] and store.verify().ok
