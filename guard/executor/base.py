"""The Executor protocol: submit guard requests, await their results, from an event loop.

Two implementations: ``InProcessExecutor`` (a thread per model behind a micro-batcher, the embedded
default when no broker is set) and ``CeleryExecutor`` (Celery workers behind Redis queues). Both
answer one result per request, in order, or raise a ``GuardError``: ``GuardTimeout`` when the
results are not back within ``timeout`` seconds, ``ModelUnavailable`` when a model, worker or
broker cannot serve, and whatever typed error the model raised (``BadInput``,
``MalformedModelOutput``). Neither ever blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from guard.executor.wire import WorkerStatus
from guard.settings import GuardSettings
from guard.types import LlamaGuardRequest, LlamaGuardResult, PromptGuardRequest, PromptGuardResult

__all__ = ["Executor", "WorkerStatus", "create_executor"]


@runtime_checkable
class Executor(Protocol):
    async def llama_guard(self, requests: Sequence[LlamaGuardRequest],
                          timeout: float) -> list[LlamaGuardResult]:
        ...

    async def prompt_guard(self, requests: Sequence[PromptGuardRequest],
                           timeout: float) -> list[PromptGuardResult]:
        ...

    async def status(self) -> list[WorkerStatus]:
        """What serves each model kind: worker name, model, whether loaded, batching counters."""
        ...

    def close(self) -> None:
        """Release threads and connections (idempotent)."""
        ...


def create_executor(settings: GuardSettings) -> Executor:
    """Celery when ``settings.broker_url`` is set, else in-process."""
    if settings.broker_url:
        from guard.executor.celery import CeleryExecutor

        return CeleryExecutor(settings)
    from guard.executor.inprocess import InProcessExecutor

    return InProcessExecutor.from_settings(settings)
