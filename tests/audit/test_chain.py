"""The hash chain: `verify` passes on a real log and names the first broken record after a row is
edited or deleted directly in the database (sqlite3 / psycopg, not through the store); pruning
leaves a checkpoint that keeps the chain verifiable."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from guard.audit import SqlAuditStore
from guard.errors import AuditUnavailable
from guard.types import Action
from tests.audit.helpers import raw_execute, record


def _log(store: SqlAuditStore, n: int = 6, tenant: str = "acme", old: int = 0):
    now = datetime.now(timezone.utc)
    records = [
        record(
            f"message number {i}",
            tenant=tenant,
            action=Action.BLOCK if i % 2 else Action.ALLOW,
            categories=["S9"] if i % 2 else [],
            time=now - timedelta(days=40) if i < old else now,
        )
        for i in range(n)
    ]
    return store.append(records)


def test_verify_passes_on_a_real_log(store):
    _log(store)
    _log(store, 3, tenant="globex")
    report = store.verify()
    assert report.ok and not report.broken
    assert report.records == 9 and report.tenants == 2


def test_editing_a_record_body_is_detected_and_named(store, store_url):
    chain = _log(store)
    target = chain[2]
    raw_execute(
        store_url,
        "UPDATE audit_records SET body = replace(body, 'message number 2', 'nothing to see') WHERE id = %s",
        (target.id,),
    )
    report = store.verify()
    assert not report.ok
    [broken] = report.broken
    assert broken.record_id == target.id and broken.seq == 3 and "altered" in broken.reason


def test_editing_a_filter_column_is_detected_and_named(store, store_url):
    chain = _log(store)
    target = chain[1]  # a block
    raw_execute(store_url, "UPDATE audit_records SET action = 'allow' WHERE id = %s", (target.id,))
    [broken] = store.verify().broken
    assert broken.record_id == target.id and "action" in broken.reason


def test_rehashing_an_edited_record_still_breaks_the_link_to_it(store, store_url):
    """A forger who edits a body and recomputes its hash breaks the next record's prev_hash."""
    import hashlib

    chain = _log(store)
    target = chain[2]
    body = raw_execute(store_url, "SELECT body FROM audit_records WHERE id = %s", (target.id,))[0][0]
    forged = body.replace("message number 2", "forged")
    raw_execute(
        store_url,
        "UPDATE audit_records SET body = %s, hash = %s WHERE id = %s",
        (forged, hashlib.sha256(forged.encode()).hexdigest(), target.id),
    )
    [broken] = store.verify().broken
    assert broken.record_id == chain[3].id and "prev_hash" in broken.reason


def test_deleting_a_record_is_detected_and_the_next_one_named(store, store_url):
    chain = _log(store)
    raw_execute(store_url, "DELETE FROM audit_records WHERE id = %s", (chain[3].id,))
    [broken] = store.verify().broken
    assert broken.record_id == chain[4].id and "missing" in broken.reason and "seq 4" in broken.reason


def test_deleting_the_newest_record_is_detected_and_named(store, store_url):
    chain = _log(store)
    raw_execute(store_url, "DELETE FROM audit_records WHERE id = %s", (chain[-1].id,))
    [broken] = store.verify().broken
    assert broken.record_id == chain[-1].id and "head" in broken.reason


def test_deleting_a_category_row_is_detected(store, store_url):
    chain = _log(store)
    raw_execute(store_url, "DELETE FROM audit_record_categories WHERE record_id = %s", (chain[1].id,))
    [broken] = store.verify().broken
    assert broken.record_id == chain[1].id


def test_only_the_tampered_tenant_is_reported(store, store_url):
    acme = _log(store)
    _log(store, 3, tenant="globex")
    raw_execute(store_url, "DELETE FROM audit_records WHERE id = %s", (acme[0].id,))
    report = store.verify()
    assert [b.tenant for b in report.broken] == ["acme"]
    assert report.broken[0].record_id == acme[1].id


def test_prune_keeps_verify_passing_with_a_signed_checkpoint(store_url):
    store = SqlAuditStore(store_url, signing_key=b"k" * 32)
    chain = _log(store, 8, old=5)
    report = store.prune(datetime.now(timezone.utc) - timedelta(days=30))
    assert report.pruned == {"acme": 5} and not report.warnings
    [checkpoint] = report.checkpoints
    assert checkpoint.seq == 5 and checkpoint.hash == chain[4].hash and checkpoint.signature
    remaining = [r.id for r in store.query()]
    assert sorted(remaining) == sorted(r.id for r in chain[5:])
    verified = store.verify()
    assert verified.ok and verified.records == 3 and not verified.warnings
    more = store.append([record("after the prune")])[0]
    assert more.prev_hash == chain[-1].hash and store.verify().ok
    assert store.prune(datetime.now(timezone.utc) - timedelta(days=30)).pruned == {}  # nothing older left
    store.close()


def test_prune_without_key_is_hashed_and_warned(store):
    _log(store, 4, old=2)
    report = store.prune(datetime.now(timezone.utc) - timedelta(days=30))
    assert report.pruned == {"acme": 2} and report.warnings
    verified = store.verify()
    assert verified.ok and any("unsigned" in w for w in verified.warnings)


def test_a_forged_checkpoint_is_detected(store_url):
    store = SqlAuditStore(store_url, signing_key=b"secret-key")
    _log(store, 4, old=2)
    store.prune(datetime.now(timezone.utc) - timedelta(days=30))
    raw_execute(
        store_url, "UPDATE audit_checkpoints SET body = replace(body, '\"pruned\":2', '\"pruned\":1')"
    )
    report = store.verify()
    assert not report.ok and "checkpoint" in report.broken[0].reason
    store.close()


def test_deleting_the_first_record_after_a_prune_is_detected(store, store_url):
    chain = _log(store, 6, old=2)
    store.prune(datetime.now(timezone.utc) - timedelta(days=30))
    raw_execute(store_url, "DELETE FROM audit_records WHERE id = %s", (chain[2].id,))
    [broken] = store.verify().broken
    assert broken.record_id == chain[3].id


def test_prune_refuses_a_chain_that_does_not_verify(store, store_url):
    chain = _log(store, 6, old=3)
    raw_execute(store_url, "UPDATE audit_records SET request_id = 'x' WHERE id = %s", (chain[1].id,))
    with pytest.raises(AuditUnavailable, match="does not verify"):
        store.prune(datetime.now(timezone.utc) - timedelta(days=30))
    assert len(store.query()) == 6  # nothing removed
