"""Audit log: records of every decision, stored durably in a per-tenant hash chain.

* ``record``  -- ``build_record``: an ``AuditRecord`` from request metadata, results, decision and
  content, with the policy's retention mode applied;
* ``chain``   -- hashing, chaining and prune checkpoints;
* ``store``   -- ``AuditStore`` protocol and ``SqlAuditStore`` (SQLite / PostgreSQL), ``open_store``;
* ``writer``  -- group commit; ``journal`` -- the local fallback while the store is down;
* ``verify``  -- chain verification; ``review`` -- the escalation review queue.
"""

from guard.audit.record import build_record
from guard.audit.store import AuditFilters, AuditStore, PruneReport, SqlAuditStore, open_store
from guard.audit.verify import BrokenRecord, VerifyReport

__all__ = [
    "AuditFilters",
    "AuditStore",
    "BrokenRecord",
    "PruneReport",
    "SqlAuditStore",
    "VerifyReport",
    "build_record",
    "open_store",
]
