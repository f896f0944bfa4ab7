"""The per-tenant hash chain and the signed checkpoints that let a pruned chain still verify.

A record's hash is the SHA-256 of the canonical JSON of the record without its ``hash`` field
(``prev_hash`` included), so each record commits to its predecessor: editing any field of a record
changes its hash, and deleting a record breaks the ``prev_hash`` link of its successor.

Canonical JSON: ``model_dump(mode="json")`` (ISO times, enum values), keys sorted, no whitespace,
UTF-8 without escaping (``json.dumps(..., sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``). The stored body of a record is exactly this text; its hash sits in a column
beside it, and verification hashes the stored text.

When the oldest records are pruned, a :class:`Checkpoint` remembers the last pruned record (its
tenant, sequence number, id and hash). The first remaining record must link to it. The checkpoint
is HMAC-SHA256-signed with ``GUARD_AUDIT_SIGNING_KEY`` when one is configured; without a key it is
only hashed (its ``digest``), which detects accidental damage but not a forger who rewrites both the
checkpoint and the records, and verification reports it as a warning.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from guard.types import AuditRecord

GENESIS = None  # prev_hash of a tenant's first record


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_payload(record: AuditRecord) -> str:
    """The canonical JSON of ``record`` without its ``hash``: what is hashed, and the stored body."""
    return canonical_json(record.model_dump(mode="json", exclude={"hash"}))


def hash_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_hash(record: AuditRecord) -> str:
    """SHA-256 (hex) of the canonical JSON of ``record`` without its ``hash`` field."""
    return hash_text(record_payload(record))


def link(record: AuditRecord, prev_hash: str | None) -> tuple[AuditRecord, str]:
    """A copy of ``record`` chained after ``prev_hash`` carrying its own hash, and its body.

    Verification hashes the stored body text itself, never a re-serialisation, so records written
    before a field was added to ``AuditRecord`` still verify after the upgrade.
    """
    linked = record.model_copy(update={"prev_hash": prev_hash, "hash": None})
    body = record_payload(linked)
    linked.hash = hash_text(body)
    return linked, body


def with_hash(body: str, hash_: str) -> str:
    """An exported line: the stored body with its ``hash`` added (a valid ``AuditRecord`` JSON)."""
    return f'{body[:-1]},"hash":"{hash_}"}}'


def content_sha256(text: str) -> str:
    return hash_text(text)


# --------------------------------------------------------------------------- checkpoints


class Checkpoint(BaseModel):
    """The head of a pruned prefix of one tenant's chain."""

    model_config = ConfigDict(extra="forbid")

    tenant: str
    seq: int  # sequence number of the last pruned record
    record_id: str
    hash: str  # that record's hash: the prev_hash of the first remaining record
    pruned: int  # records removed by this prune
    time: datetime
    digest: str = ""
    signature: str | None = None  # HMAC-SHA256 hex, or None when no key was configured

    def signed_fields(self) -> str:
        return canonical_json(self.model_dump(mode="json", exclude={"digest", "signature"}))


def seal(checkpoint: Checkpoint, key: bytes | None) -> Checkpoint:
    """Fill in the digest and, with a key, the HMAC signature."""
    text = checkpoint.signed_fields().encode("utf-8")
    signature = hmac.new(key, text, hashlib.sha256).hexdigest() if key else None
    return checkpoint.model_copy(update={"digest": hashlib.sha256(text).hexdigest(), "signature": signature})


def check_seal(checkpoint: Checkpoint, key: bytes | None) -> tuple[bool, str | None]:
    """(intact, warning). Intact is False when the digest or a checkable signature is wrong."""
    text = checkpoint.signed_fields().encode("utf-8")
    if not hmac.compare_digest(hashlib.sha256(text).hexdigest(), checkpoint.digest):
        return False, None
    if checkpoint.signature is None:
        return (
            True,
            f"checkpoint of tenant {checkpoint.tenant!r} at seq {checkpoint.seq} is unsigned "
            "(no GUARD_AUDIT_SIGNING_KEY when it was pruned): only its digest was checked",
        )
    if key is None:
        return (
            True,
            f"checkpoint of tenant {checkpoint.tenant!r} is signed but no GUARD_AUDIT_SIGNING_KEY "
            "is configured here: signature not checked",
        )
    expected = hmac.new(key, text, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, checkpoint.signature), None
