"""Audit test fixtures: every store test runs on a real SQLite file and on the real PostgreSQL
(a fresh schema per test, dropped afterwards; skipped with the reason when PostgreSQL is down)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from guard.audit import SqlAuditStore
from tests.audit.helpers import pg_schema, pg_url, postgres_reachable


@pytest.fixture(scope="session")
def postgres_unreachable() -> str | None:
    return postgres_reachable()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, postgres_unreachable) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.sqlite3'}"
        return
    if postgres_unreachable:
        pytest.skip(postgres_unreachable)
    with pg_schema() as schema:
        yield pg_url(schema)


@pytest.fixture
def store(store_url) -> Iterator[SqlAuditStore]:
    audit = SqlAuditStore(store_url)
    yield audit
    audit.close()
