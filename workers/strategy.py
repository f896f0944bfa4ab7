"""How the worker handles a guard model task: Celery's consumer, a lean path from message to result.

Celery lets a task name its ``Strategy``: the function its consumer calls, on the event-loop
thread, for each message of that task. Celery's default builds a ``Request``, checks revocation,
rate limits and ETAs, sends events and signals, and hands the request to the pool, whose thread
runs the tracer (more signals, state bookkeeping), stores the result, and then asks the event loop
to acknowledge the message. For a guard task, which has no ETA, rate limit, retry or child task,
all of that is per-task CPU on a path where the model itself may cost nothing (``bench
celery_path``), and the acknowledgement wakes the event loop just when the result's caller should
be running.

``lean`` keeps what matters:

* the queues, prefetch and pool are Celery's (the threads pool: its threads run the tasks, up to
  ``worker_concurrency`` at once, and wait on the process's micro-batcher);
* a task past its ``expires`` (or revoked) is not run: its caller gets ``REVOKED``, as from Celery;
* acks late: the message is acknowledged by the pool thread after the result was stored and
  published (``GuardRedisBackend.publish_result``); if the process dies before that, the broker
  redelivers it (``workers.broker``), which is what ``task_reject_on_worker_lost`` asks for;
* an unexpected exception becomes a ``FAILURE`` result (the client raises ``ModelUnavailable``).

A lone task runs on the consumer's own thread: when no other task of its kind is running or
waiting in the pool, the previous one arrived at least ``LONE_GAP_S`` earlier, and the model's
recent tasks took less than ``INLINE_MAX_S`` each (and its model is loaded: a load, or the retry
of a failed one, never happens on the event loop), handing it to a pool thread would cost more than
the task itself (a thread wake-up and a GIL hand-over while the event loop finishes its iteration:
~0.25 ms of a no-op model's ~2.5 ms per call). Tasks that arrive close together, or any task of a
model that costs more, still go to the pool and meet in the batcher, so batching under concurrency
is unchanged; the event loop is never blocked for longer than about one cheap task.

Other tasks (``guard.ping``) and any pool other than threads keep Celery's default strategy.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

from celery import states
from celery.concurrency.thread import TaskPool as ThreadsPool
from celery.worker.strategy import default

from guard.executor.wire import TASKS

log = logging.getLogger("guard.worker")

KIND_OF_TASK = {name: kind for kind, name in TASKS.items()}

#: A task runs on the consumer's thread only if the model's recent tasks took less than this.
INLINE_MAX_S = 0.001
#: ... and the previous task of its kind arrived at least this long before it (not a burst).
LONE_GAP_S = 0.001
#: Weight of the newest task in the running estimate of a task's cost.
COST_WEIGHT = 0.25


class _Load:
    """How busy one kind's tasks keep this worker: tasks in the pool, the last arrival, the cost."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_pool = 0
        self.last_arrival = float("-inf")
        #: Running estimate of one task's time in ``serve`` (None until a task has run).
        self.cost_s: float | None = None

    def lone(self, now: float) -> bool:
        """Whether a task arriving ``now`` should run right here (and note its arrival)."""
        with self.lock:
            gap, self.last_arrival = now - self.last_arrival, now
            return (self.in_pool == 0 and gap >= LONE_GAP_S and self.cost_s is not None
                    and self.cost_s < INLINE_MAX_S)

    def ran(self, seconds: float) -> None:
        with self.lock:
            self.cost_s = seconds if self.cost_s is None else \
                self.cost_s + COST_WEIGHT * (seconds - self.cost_s)


def lean(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Any:
    pool = consumer.pool
    kind = KIND_OF_TASK.get(task.name)
    if kind is None or not isinstance(pool, ThreadsPool):
        return default(task, app, consumer, **kwargs)
    from workers.tasks import runtime, serve  # here: workers.tasks names this strategy

    backend = task.backend
    revoked = consumer.controller.state.revoked
    hub = consumer.hub

    load = _Load()

    def run(message: Any, task_id: str, reply_to: str | None) -> None:
        started = time.perf_counter()
        try:
            args, _kwargs, _embed = message.decode()
            result, state = serve(kind, args[0]), states.SUCCESS
        except Exception as error:  # noqa: BLE001 - becomes the caller's error, never a silent drop
            log.error("%s task %s failed: %r", kind, task_id, error)
            result, state = {"exc_type": type(error).__name__, "exc_message": str(error)}, states.FAILURE
        load.ran(time.perf_counter() - started)
        finish(message, task_id, result, state, reply_to)

    def pooled(message: Any, task_id: str, reply_to: str | None) -> None:
        try:
            run(message, task_id, reply_to)
        finally:
            with load.lock:
                load.in_pool -= 1

    def finish(message: Any, task_id: str, result: Any, state: str, reply_to: str | None) -> None:
        try:
            backend.publish_result(task_id, result, state, reply_to)
        except Exception as error:  # noqa: BLE001 - Redis gone: the caller's client publishes it again
            log.error("could not store the result of %s task %s: %r", kind, task_id, error)
        blocked = not message.channel.qos.can_consume()
        message.ack()
        if blocked and hub is not None:
            hub.call_soon(_nothing)  # the event loop stopped reading at the prefetch limit: wake it

    def handle(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any) -> None:
        headers = message.headers
        task_id = headers["id"]
        reply_to = message.properties.get("reply_to")
        if task_id in revoked or _expired(headers.get("expires")):
            finish(message, task_id, {"exc_type": "TaskRevokedError", "exc_message": "expired"}, states.REVOKED,
                   reply_to)
            return
        if load.lone(time.perf_counter()) and runtime().runners.loaded(kind):  # never a load here
            run(message, task_id, reply_to)  # on this thread: see "A lone task" above
            return
        with load.lock:
            load.in_pool += 1
        try:
            pool.apply_async(pooled, (message, task_id, reply_to))
        except BaseException:
            with load.lock:
                load.in_pool -= 1
            raise
        recorder = getattr(message.channel, "recorder", None)  # workers.broker: record it soon
        if recorder is not None:
            recorder.kick()

    return handle


def _expired(expires: str | None) -> bool:
    if not expires:
        return False
    try:
        return datetime.now(timezone.utc) >= datetime.fromisoformat(expires)
    except (TypeError, ValueError):
        return False


def _nothing() -> None:
    pass
