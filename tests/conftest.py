"""Shared test fixtures live in tests/fixtures/ (one module per kind of real thing they start)."""

pytest_plugins = [
    "tests.fixtures.audit",
    "tests.fixtures.models",
    "tests.fixtures.redis",
    "tests.fixtures.servers",
]
