"""The library behind a micro-batcher, per model kind: what the in-process executor and every
Celery worker process run.

``BatchedModels`` owns one ``MicroBatcher`` per model kind, created on first use, whose batch
function calls the runner (``classify`` / ``scan``). The runner itself loads lazily in the batcher's
thread on the first batch (or earlier, through ``warm_up``), so a caller never loads a model on its
own thread, and never on an event loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from guard.batching import MicroBatcher
from guard.errors import BadInput, GuardTimeout, MalformedModelOutput
from guard.executor.wire import BatchCounters, Kind, WorkerStatus
from guard.models.registry import Runners

log = logging.getLogger("guard.executor")


class BatchedModels:
    """Runners behind batchers; thread-safe."""

    def __init__(self, runners: Runners, *, max_batch_size: int, max_wait_ms: float) -> None:
        self.runners = runners
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self._batchers: dict[Kind, MicroBatcher[Any, Any]] = {}
        self._lock = threading.Lock()

    def submit(self, kind: Kind, requests: Sequence[Any]) -> list[Future[Any]]:
        return self._batcher(kind).submit_many(requests)

    def run(self, kind: Kind, requests: Sequence[Any], timeout: float) -> list[Any]:
        """Blocking: the results of ``requests``; the first failure raises (``GuardTimeout`` after
        ``timeout`` seconds)."""
        outcomes = self.run_each(kind, requests, timeout)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes

    def run_each(self, kind: Kind, requests: Sequence[Any], timeout: float) -> list[Any]:
        """Blocking: per request its result or its exception (``GuardTimeout`` past ``timeout``).
        An idle batcher runs the requests on this thread (no hand-over to the batcher's thread)."""
        futures = self._batcher(kind).submit_many(requests, inline=True)
        deadline = time.monotonic() + timeout
        outcomes: list[Any] = []
        for future in futures:
            try:
                outcomes.append(future.result(max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                future.cancel()
                outcomes.append(GuardTimeout(f"{kind} did not answer within {timeout:g}s"))
            except CancelledError:
                outcomes.append(GuardTimeout(f"{kind} request cancelled"))
            except Exception as error:  # noqa: BLE001 - returned to the caller as its outcome
                outcomes.append(error)
        return outcomes

    def warm_up(self, kind: Kind) -> threading.Thread:
        """Load ``kind``'s model in the background (failures are kept for ``status``)."""

        def load() -> None:
            started = time.monotonic()
            try:
                runner = self.runners.get(kind)
            except Exception as error:  # noqa: BLE001 - reported through status(); the next call retries
                log.error("the %s model did not load: %s", kind, error)
                return
            info = runner.info
            log.info("%s model ready: %s (%s, %s) in %.1f s", kind, info.model, info.device, info.dtype,
                     time.monotonic() - started)

        thread = threading.Thread(target=load, name=f"warm-up-{kind}", daemon=True)
        thread.start()
        return thread

    def status(self, kind: Kind, *, worker: str, concurrency: int | None = None) -> WorkerStatus:
        batcher = self._batchers.get(kind)
        stats = batcher.stats if batcher is not None else None
        return WorkerStatus(
            worker=worker,
            queue=kind,
            loaded=self.runners.loaded(kind),
            loading=self.runners.loading(kind),
            model=self.runners.info(kind),
            configured_model=self.runners.spec(kind).model,
            error=self.runners.error(kind),
            pid=os.getpid(),
            concurrency=concurrency,
            batching=BatchCounters(batches=stats.batches, items=stats.items, max_batch=stats.max_batch,
                                   errors=stats.errors) if stats else BatchCounters(),
        )

    def close(self) -> None:
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()

    def _batcher(self, kind: Kind) -> MicroBatcher[Any, Any]:
        batcher = self._batchers.get(kind)
        if batcher is None:
            with self._lock:
                batcher = self._batchers.get(kind)
                if batcher is None:
                    batcher = self._batchers[kind] = MicroBatcher(
                        self._batch_fn(kind), max_batch_size=self.max_batch_size,
                        max_wait_ms=self.max_wait_ms, name=f"batch-{kind}",
                        retry_alone=_request_specific)
        return batcher

    def _batch_fn(self, kind: Kind) -> Any:
        """The runner call for one batch; per-request errors when the runner offers them."""
        method = {"llama_guard": ("classify_each", "classify"), "prompt_guard": ("scan_each", "scan")}[kind]

        def run(requests: list[Any]) -> Any:
            runner = self.runners.get(kind)
            call = getattr(runner, method[0], None) or getattr(runner, method[1])
            return call(requests)

        return run


def _request_specific(error: BaseException) -> bool:
    """Errors that one request of a batch may cause: rerun its neighbours without it."""
    return isinstance(error, (BadInput, MalformedModelOutput))
