"""Run a ``CheckPlan`` on an executor: Llama Guard and Prompt Guard in parallel, never raising.

A guard that fails or times out is recorded in ``GuardResults.errors`` (``"<kind>: <message>"``,
the ``GuardError`` kind) or ``GuardResults.timeouts``; the policy's ``on_error`` decides later what
that means. Two things propagate: cancellation (the caller went away), and ``ContextOverflow``, a
conversation longer than the Llama Guard model reads under a policy with ``context.overflow:
refuse`` (the plan carries the choice): the input is the cause, not the guard, so the caller gets
the typed error (HTTP 400, CLI exit 2) instead of an ``on_error`` decision.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from typing import Any

from guard import metrics
from guard.errors import ContextOverflow, GuardError, GuardTimeout
from guard.executor.base import Executor
from guard.policy.plan import CheckPlan
from guard.types import GuardResults

#: Seconds per guard when neither the caller nor the plan gives one.
DEFAULT_TIMEOUT_S = 30.0

Timeouts = Mapping[str, float] | float | None


def guard_timeout(plan: CheckPlan, name: str, timeouts: Timeouts = None) -> float:
    """The caller's timeout for ``name`` (one number for all, or per guard), else the plan's."""
    if isinstance(timeouts, (int, float)):
        return float(timeouts)
    if timeouts is not None and name in timeouts:
        return float(timeouts[name])
    return float(plan.timeouts.get(name, DEFAULT_TIMEOUT_S))  # type: ignore[call-overload]


async def run_checks(executor: Executor, plan: CheckPlan, timeouts: Timeouts = None) -> GuardResults:
    jobs: dict[str, Awaitable[list[Any]]] = {}
    seconds: dict[str, float] = {}
    if plan.llama_guard_requests:
        jobs["llama_guard"] = _settled(executor.llama_guard(plan.llama_guard_requests,
                                                            guard_timeout(plan, "llama_guard", timeouts)),
                                       "llama_guard", seconds)
    if plan.prompt_guard:
        jobs["prompt_guard"] = _settled(executor.prompt_guard(plan.prompt_guard_requests,
                                                              guard_timeout(plan, "prompt_guard", timeouts)),
                                        "prompt_guard", seconds)
    outcomes = await _both(list(jobs.values()))
    fields: dict[str, Any] = {"errors": {}, "timeouts": []}
    for name, outcome in zip(jobs, outcomes):
        if isinstance(outcome, ContextOverflow):
            raise outcome
        if isinstance(outcome, GuardTimeout):
            fields["timeouts"].append(name)
        elif isinstance(outcome, BaseException):
            fields["errors"][name] = _describe(outcome)
        elif name == "llama_guard":
            fields["llama_guard"], fields["llama_guard_extra"] = plan.llama_guard_results(outcome)
        else:
            fields["prompt_guard"] = plan.with_indices(outcome)
    metrics.observe_checks(seconds, fields["errors"], fields["timeouts"])
    return GuardResults(**fields)


async def _both(jobs: list[Awaitable[Any]]) -> list[Any]:
    """The jobs' outcomes, run side by side: the second as a task, the first in this one (what
    ``gather`` does, without its task per job and its gathering future). Cancelling the caller
    cancels both."""
    if len(jobs) < 2:
        return [await job for job in jobs]
    second = asyncio.ensure_future(jobs[1])
    try:
        first = await jobs[0]
    except BaseException:
        second.cancel()
        raise
    return [first, await second]


async def _settled(job: Awaitable[list[Any]], name: str, seconds: dict[str, float]) -> Any:
    """The job's result or the exception it raised (cancellation propagates), timed."""
    started = time.perf_counter()
    try:
        return await job
    except Exception as exc:  # noqa: BLE001 - an outcome, judged by the caller
        return exc
    finally:
        seconds[name] = time.perf_counter() - started


def _describe(error: BaseException) -> str:
    if isinstance(error, GuardError):
        return f"{error.kind}: {error.message}"
    return f"guard_error: {type(error).__name__}: {error}"
