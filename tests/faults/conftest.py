"""One gateway of our own in front of the faulty upstream (shared by the module's fault tests): the
shipped default policy, a fail-open variant, SQLite audit with a journal, demo models in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench._reliability.faulty_upstream import FaultyUpstream
from bench._reliability.harness import LiveGateway, live_gateway


@pytest.fixture(scope="session")
def faulty_upstream() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="session")
def fault_gateway(demo_models: Any, faulty_upstream: FaultyUpstream, tmp_path_factory) -> Iterator[LiveGateway]:
    with live_gateway(tmp_path_factory.mktemp("fault-gateway"), demo_models, faulty_upstream.url) as gateway:
        yield gateway
