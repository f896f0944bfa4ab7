"""The in-process executor: the models run in this process, on batcher threads.

The event loop only queues requests and awaits ``concurrent.futures`` results wrapped as asyncio
futures; loading and inference happen on the batchers' threads. A timed-out request that has not
started is cancelled (dropped from its batch); one already running finishes and is discarded.
"""

from __future__ import annotations

import threading

import asyncio
from collections.abc import Sequence
from typing import Any

from guard.errors import GuardError, GuardTimeout, ModelUnavailable
from guard.executor.local import BatchedModels
from guard.executor.wire import KINDS, Kind, WorkerStatus
from guard.models.registry import Runners, load_runners
from guard.settings import GuardSettings
from guard.types import LlamaGuardRequest, LlamaGuardResult, PromptGuardRequest, PromptGuardResult

WORKER_NAME = "in-process"


class InProcessExecutor:
    def __init__(self, runners: Runners, *, max_batch_size: int = 16, max_wait_ms: float = 0.0) -> None:
        self.models = BatchedModels(runners, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)

    @classmethod
    def from_settings(cls, settings: GuardSettings) -> InProcessExecutor:
        return cls(load_runners(settings), max_batch_size=settings.max_batch_size,
                   max_wait_ms=settings.max_wait_ms)

    async def llama_guard(self, requests: Sequence[LlamaGuardRequest],
                          timeout: float) -> list[LlamaGuardResult]:
        return await self._run("llama_guard", requests, timeout)

    async def prompt_guard(self, requests: Sequence[PromptGuardRequest],
                           timeout: float) -> list[PromptGuardResult]:
        return await self._run("prompt_guard", requests, timeout)

    async def status(self) -> list[WorkerStatus]:
        return [self.models.status(kind, worker=WORKER_NAME) for kind in KINDS]

    def warm_up(self) -> list[threading.Thread]:
        """Start loading both models in the background (the first checks then wait less); join the
        returned threads to wait for the loads (a failed load is reported by ``status``)."""
        return [self.models.warm_up(kind) for kind in KINDS]

    def close(self) -> None:
        self.models.close()

    async def _run(self, kind: Kind, requests: Sequence[Any], timeout: float) -> list[Any]:
        if not requests:
            return []
        futures = [asyncio.wrap_future(f) for f in self.models.submit(kind, requests)]
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))
        except TimeoutError:
            raise GuardTimeout(f"{kind} did not answer within {timeout:g}s") from None
        except GuardError:
            raise
        except Exception as error:  # noqa: BLE001 - an unexpected model failure
            raise ModelUnavailable(f"{kind} failed: {type(error).__name__}: {error}") from error
