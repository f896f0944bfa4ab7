"""Audit test fixtures: ``store`` is an open ``SqlAuditStore`` on ``store_url``, which
``tests.fixtures.audit`` parametrises over a real SQLite file and the real PostgreSQL (a fresh
schema per test, dropped afterwards; skipped with the reason when PostgreSQL is down)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from guard.audit import SqlAuditStore


@pytest.fixture
def store(store_url) -> Iterator[SqlAuditStore]:
    audit = SqlAuditStore(store_url)
    yield audit
    audit.close()
