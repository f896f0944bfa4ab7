"""Group commit: one writer thread turns concurrent appends into one transaction.

Callers hand a batch of records to :meth:`GroupCommitWriter.submit` and wait on the returned
future. The thread takes everything that queued up while the previous transaction was running (up
to ``max_records``) and hands it to ``commit`` in one call, so under load the number of
transactions (and fsyncs) stays near one per commit latency however many requests arrive, and an
idle store still commits a lone record at once (no linger timer).

When idle, the thread runs an ``idle`` chore every ``idle_interval_s`` (the store uses it to
replay its journal once the database is back, even without new traffic).

Futures are marked running at submission, so cancelling a waiting caller (an HTTP client that went
away) never withdraws its record.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from guard.errors import AuditUnavailable
from guard.types import AuditRecord

log = logging.getLogger(__name__)

Batch = list[AuditRecord]
#: Commits a group of batches; returns, per batch, the stored records or the error for that batch.
CommitFn = Callable[[list[Batch]], list[Batch | BaseException]]


class GroupCommitWriter:
    def __init__(
        self,
        commit: CommitFn,
        *,
        max_records: int = 1000,
        name: str = "guard-audit-writer",
        idle: Callable[[], None] | None = None,
        idle_interval_s: float = 5.0,
    ) -> None:
        self._commit = commit
        self._idle = idle
        self._idle_interval = idle_interval_s
        self._max_records = max_records
        self._name = name
        self._cond = threading.Condition()
        self._pending: deque[tuple[Batch, Future]] = deque()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False

    def submit(self, records: Sequence[AuditRecord]) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        with self._cond:
            if self._closed:
                raise AuditUnavailable("the audit writer is closed")
            self._pending.append((list(records), future))
            self._start_locked()
            self._cond.notify()
        return future

    def start(self) -> None:
        """Start the thread now (it also starts on the first submit), e.g. for its idle ticks."""
        with self._cond:
            if not self._closed:
                self._start_locked()

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)

    # ------------------------------------------------------------------ the thread

    def _start_locked(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's thread does not exist here
            self._thread, self._pid = None, os.getpid()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _take_group(self) -> list[tuple[Batch, Future]] | None:
        """The next group; [] after an idle interval without work; None once closed and drained."""
        with self._cond:
            if not self._pending and not self._closed:
                self._cond.wait(self._idle_interval if self._idle else None)
            if not self._pending:
                return None if self._closed else []
            group = [self._pending.popleft()]
            size = len(group[0][0])
            while self._pending and size + len(self._pending[0][0]) <= self._max_records:
                item = self._pending.popleft()
                group.append(item)
                size += len(item[0])
            return group

    def _run(self) -> None:
        while (group := self._take_group()) is not None:
            if not group:
                self._tick()
                continue
            try:
                outcomes = self._commit([batch for batch, _ in group])
            except BaseException as exc:  # never leave a caller waiting forever
                error = (
                    exc
                    if isinstance(exc, AuditUnavailable)
                    else AuditUnavailable(f"audit write failed: {exc!r}")
                )
                outcomes = [error] * len(group)
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _tick(self) -> None:
        if self._idle is None:
            return
        try:
            self._idle()
        except Exception:  # noqa: BLE001 - an idle chore must never kill the writer
            log.exception("audit writer idle task failed")
