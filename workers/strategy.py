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

Other tasks (``guard.ping``) and any pool other than threads keep Celery's default strategy.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from celery import states
from celery.concurrency.thread import TaskPool as ThreadsPool
from celery.worker.strategy import default

from guard.executor.wire import TASKS

log = logging.getLogger("guard.worker")

KIND_OF_TASK = {name: kind for kind, name in TASKS.items()}
#: Seconds a result's stored copy outlives its caller's deadline (clock skew, a late fetch).
RESULT_GRACE_S = 5.0

def lean(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Any:
    pool = consumer.pool
    kind = KIND_OF_TASK.get(task.name)
    if kind is None or not isinstance(pool, ThreadsPool):
        return default(task, app, consumer, **kwargs)
    from workers.tasks import serve  # here: workers.tasks names this strategy

    backend = task.backend
    revoked = consumer.controller.state.revoked
    hub = consumer.hub

    def run(message: Any, task_id: str, reply_to: str | None, expires: str | None) -> None:
        try:
            args, _kwargs, _embed = message.decode()
            result, state = serve(kind, args[0]), states.SUCCESS
        except Exception as error:  # noqa: BLE001 - becomes the caller's error, never a silent drop
            log.error("%s task %s failed: %r", kind, task_id, error)
            result, state = {"exc_type": type(error).__name__, "exc_message": str(error)}, states.FAILURE
        finish(message, task_id, result, state, reply_to, expires)

    def finish(message: Any, task_id: str, result: Any, state: str, reply_to: str | None,
               expires: str | None) -> None:
        try:
            backend.publish_result(task_id, result, state, reply_to, keep_s=result_ttl(expires))
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
        expires = headers.get("expires")
        if task_id in revoked or _expired(expires):
            finish(message, task_id, {"exc_type": "TaskRevokedError", "exc_message": "expired"}, states.REVOKED,
                   reply_to, expires)
            return
        pool.apply_async(run, (message, task_id, reply_to, expires))
        recorder = getattr(message.channel, "recorder", None)  # workers.broker: record it soon
        if recorder is not None:
            recorder.kick()

    return handle


def _expired(expires: str | None) -> bool:
    left = _seconds_left(expires)
    return left is not None and left <= 0


def result_ttl(expires: str | None) -> float | None:
    """Seconds the stored copy of a task's result is worth keeping: until its caller stops waiting
    (the task's ``expires``, the caller's timeout) plus ``RESULT_GRACE_S``; None when the task has
    no deadline (the backend's ``result_expires`` applies). Keeping every result for the backend's
    fixed 300 s made Redis grow for five minutes under steady load, for copies nobody reads: the
    copy is only read by a caller that missed the published reply while it still waits."""
    left = _seconds_left(expires)
    return None if left is None else max(left, 0.0) + RESULT_GRACE_S


def _seconds_left(expires: str | None) -> float | None:
    if not expires:
        return None
    try:
        return (datetime.fromisoformat(expires) - datetime.now(timezone.utc)).total_seconds()
    except (TypeError, ValueError):
        return None


def _nothing() -> None:
    pass
