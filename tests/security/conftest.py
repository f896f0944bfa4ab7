"""Security-suite fixtures: the demo guard models behind a real in-process executor, and the
shipped ``policies/default.yaml`` (what production runs), shared by the whole session."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guard.executor.inprocess import InProcessExecutor
from guard.policy import Policy, load_policy_dir
from guard.settings import GuardSettings

FAMILY = "llama-guard-3-1b"
POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="session")
def shipped_default() -> Policy:
    """``policies/default.yaml`` with its guard timeouts raised to 60 s: 2 shared CPU cores under a
    parallel test load must not turn a slow check into a (fail-closed) timeout here; timeouts have
    tests of their own (tests/faults)."""
    policy = load_policy_dir(POLICIES, default_id="default").get("default")
    guards = policy.guards.model_copy(update={
        "llama_guard": policy.guards.llama_guard.model_copy(update={"timeout_ms": 60_000}),
        "prompt_guard": policy.guards.prompt_guard.model_copy(update={"timeout_ms": 60_000})})
    return policy.model_copy(update={"guards": guards})


@pytest.fixture(scope="session")
def guard_settings(demo_models: Any) -> GuardSettings:
    return GuardSettings(llama_guard=str(demo_models.llama_guard), family=FAMILY,
                         prompt_guard=str(demo_models.prompt_guard_2), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def guard_executor(guard_settings: GuardSettings) -> Iterator[InProcessExecutor]:
    executor = InProcessExecutor.from_settings(guard_settings)
    yield executor
    executor.close()


@pytest.fixture(scope="session")
def lg_tokenizer(guard_executor: InProcessExecutor) -> Any:
    return guard_executor.models.runners.llama_guard.tokenizer


def run(coro: Any) -> Any:
    return asyncio.run(coro)
