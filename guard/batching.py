"""A small, model-agnostic micro-batcher: requests that arrive together run in one call.

Callers on any thread ``submit`` items and get ``concurrent.futures.Future`` objects back. One
background thread per batcher (or ``concurrency`` of them) takes the first waiting item, then keeps
collecting until the batch holds ``max_batch_size`` items or ``max_wait_ms`` has passed since that
first item, and calls ``fn(batch)`` once. ``fn`` must return one result per item, in order; an item
whose result is an exception instance fails alone, and if ``fn`` raises, every item of that batch
gets the exception.

When a batch of several items fails with an error that ``retry_alone(error)`` accepts (say, one bad
request), each of its items is run again on its own, so one bad request does not fail its neighbours.

``max_wait_ms = 0`` is greedy batching: a batch is whatever is already queued when a runner thread
becomes free, so a lone request never waits, and batches grow on their own while the model is busy.

Used by the in-process executor and inside every Celery worker process (where the threads pool runs
many tasks at once, each waiting on its own future), so it knows nothing of either.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchStats:
    """Counters since start: how many batches ran and how large they were."""

    batches: int = 0
    items: int = 0
    max_batch: int = 0
    errors: int = 0
    # batch size -> how many batches had that size
    sizes: dict[int, int] = field(default_factory=dict)

    def record(self, size: int, failed: bool) -> None:
        self.batches += 1
        self.items += size
        self.max_batch = max(self.max_batch, size)
        self.errors += int(failed)
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def snapshot(self) -> BatchStats:
        return BatchStats(self.batches, self.items, self.max_batch, self.errors, dict(self.sizes))


class BatcherClosed(RuntimeError):
    """Raised by ``submit`` after ``close``."""


class MicroBatcher(Generic[T, R]):
    """Collects items from many threads and runs them through ``fn`` in batches."""

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        concurrency: int = 1,
        name: str = "batcher",
        retry_alone: Callable[[BaseException], bool] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self._fn = fn
        self._retry_alone = retry_alone
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.name = name
        self._queue: collections.deque[tuple[T, Future[R]]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0  # batches executing now (runner threads and inline callers)
        self._stats = BatchStats()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True) for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ public

    def submit(self, item: T) -> Future[R]:
        return self.submit_many([item])[0]

    def submit_many(self, items: Sequence[T], *, inline: bool = False) -> list[Future[R]]:
        """Queue items together (they may share a batch); one future per item, in order.

        ``inline``: when the batcher is idle (nothing queued, a runner free, greedy batching), run
        these items as a batch on the calling thread right away, sparing two thread switches; a
        blocking caller's futures are then already done. Never from an event loop.
        """
        futures: list[Future[R]] = [Future() for _ in items]
        batch = list(zip(items, futures))
        with self._cond:
            if self._closed:
                raise BatcherClosed(f"{self.name} is closed")
            run_here = inline and self._idle_for(len(batch))
            if run_here:
                self._running += 1
            else:
                self._queue.extend(batch)
                self._cond.notify()
        if run_here:
            try:
                for _, future in batch:
                    future.set_running_or_notify_cancel()
                self._execute(batch)
            finally:
                self._finished()
        return futures

    def _idle_for(self, size: int) -> bool:
        return (self.max_wait_s == 0 and not self._queue and self._running < len(self._threads)
                and size <= self.max_batch_size)

    def _finished(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    @property
    def stats(self) -> BatchStats:
        with self._cond:
            return self._stats.snapshot()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the runner threads; items still queued get ``BatcherClosed``."""
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for _, future in left:
            if future.set_running_or_notify_cancel():
                future.set_exception(BatcherClosed(f"{self.name} is closed"))
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # ------------------------------------------------------------------ runner threads

    def _run(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            try:
                if batch:
                    self._execute(batch)
            finally:
                self._finished()

    def _collect(self) -> list[tuple[T, Future[R]]] | None:
        """Block for the first item, then gather more until full or the wait is over."""
        with self._cond:
            # Wait for work, and for a free slot (a caller may be running a batch inline).
            while (not self._queue or self._running >= len(self._threads)) and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            self._running += 1
            batch = self._take(self.max_batch_size)
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if not self._queue:
                    self._cond.wait(remaining)
                batch.extend(self._take(self.max_batch_size - len(batch)))
        # Futures cancelled by their caller (timed out before running) are dropped here.
        return [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]

    def _take(self, n: int) -> list[tuple[T, Future[R]]]:
        taken = []
        while self._queue and len(taken) < n:
            taken.append(self._queue.popleft())
        return taken

    def _execute(self, batch: list[tuple[T, Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = list(self._fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
        except BaseException as error:  # noqa: BLE001 - handed to every waiting caller
            self._record(len(batch), failed=True)
            if len(batch) > 1 and self._retry_alone is not None and self._retry_alone(error):
                for pair in batch:
                    self._execute([pair])
                return
            for _, future in batch:
                future.set_exception(error)
            return
        self._record(len(batch), failed=False)
        for (_, future), result in zip(batch, results):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _record(self, size: int, failed: bool) -> None:
        with self._cond:
            self._stats.record(size, failed)
