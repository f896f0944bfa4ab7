"""Thin Celery tasks: validate the call, run the library through the process's batcher, serialize.

A model task never raises for a guard failure; it answers with the error's kind (see
``guard.executor.wire``). Models load lazily, once per worker process: when the worker is ready a
background thread starts loading the model of each queue it consumes (not in
``worker_process_init``, whose 4 s limit would kill a large load), and a task that arrives earlier
simply waits for that load. ``guard.ping`` and the ``guard_status`` broadcast report what is loaded.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Task, signals
from celery.worker.control import inspect_command
from pydantic import ValidationError

from guard.executor.local import BatchedModels
from guard.executor.wire import (
    CALLS,
    KINDS,
    PING_TASK,
    REPLIES,
    STATUS_COMMAND,
    TASKS,
    ErrorInfo,
    Kind,
    error_info,
)
from guard.models.registry import load_runners
from guard.settings import get_settings
from workers.allocator import jemalloc_loaded
from workers.app import app
from workers.memory import cap_malloc_arenas, start_pool_threads, trim_heap_periodically

log = logging.getLogger("guard.worker")

_runtime: BatchedModels | None = None
_runtime_lock = threading.Lock()
#: Model kinds this worker process serves (the queues it consumes), known once it is ready.
_served: list[Kind] = []
_concurrency: int | None = None


def runtime() -> BatchedModels:
    """This process's runners and batchers (created on first use)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            settings = get_settings()
            _runtime = BatchedModels(load_runners(settings), max_batch_size=settings.max_batch_size,
                                     max_wait_ms=settings.max_wait_ms)
        return _runtime


def serve(kind: Kind, payload: Any) -> dict[str, Any]:
    reply_cls = REPLIES[kind]
    try:
        call = CALLS[kind].model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        message = f"invalid {kind} call: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        return reply_cls(error=ErrorInfo(kind="bad_input", message=message)).model_dump(mode="json")
    outcomes = []
    for outcome in runtime().run_each(kind, call.requests, call.timeout_s):
        if isinstance(outcome, BaseException):
            if not hasattr(outcome, "kind"):
                log.error("%s request failed: %r", kind, outcome)
            outcomes.append({"error": error_info(outcome)})
        else:
            outcomes.append({"result": outcome})
    return reply_cls(outcomes=outcomes).model_dump(mode="json")


#: The worker runs these through ``workers.strategy.lean`` (Celery's consumer, not its tracer).
LEAN_STRATEGY = "workers.strategy:lean"


@app.task(name=TASKS["llama_guard"], Strategy=LEAN_STRATEGY)
def llama_guard(payload: dict[str, Any]) -> dict[str, Any]:
    return serve("llama_guard", payload)


@app.task(name=TASKS["prompt_guard"], Strategy=LEAN_STRATEGY)
def prompt_guard(payload: dict[str, Any]) -> dict[str, Any]:
    return serve("prompt_guard", payload)


def statuses(worker: str, kinds: list[Kind]) -> list[dict[str, Any]]:
    models = runtime()
    return [models.status(kind, worker=worker, concurrency=_concurrency).model_dump(mode="json")
            for kind in kinds]


@app.task(name=PING_TASK, bind=True)
def ping(self: Task, kind: Kind | None = None) -> list[dict[str, Any]]:
    """Model id, revision, device, dtype and whether it is loaded, for this worker's queue(s)."""
    kinds = [kind] if kind in KINDS else (_served or list(KINDS))
    return statuses(self.request.hostname or "worker", kinds)


@inspect_command(name=STATUS_COMMAND)
def guard_status(state: Any) -> list[dict[str, Any]]:
    """Guard model status of every queue this worker consumes (answered by every worker)."""
    return statuses(state.consumer.hostname, _served or list(KINDS))


@signals.after_setup_logger.connect
def _quiet_logs(**_: Any) -> None:
    """No line per task: Celery would log every result (user content) and pay for it in CPU."""
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("guard").setLevel(logging.INFO)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Note which model kinds this worker serves and start loading them in the background."""
    global _concurrency
    _quiet_transformers()
    queues = sender.app.amqp.queues
    names = set(queues.consume_from or queues)
    _served[:] = [kind for kind in KINDS if kind in names]
    pool = getattr(sender, "pool", None)
    _concurrency = getattr(pool, "limit", None)
    if "prefork" in type(pool).__module__:
        return  # children load on their first task; the parent must not hold a model
    start_pool_threads(pool)
    if not jemalloc_loaded():  # glibc's allocator: few arenas, free pages handed back now and then
        cap_malloc_arenas()
        trim_heap_periodically()
    for kind in _served:
        log.info("loading the %s model (%s) in the background", kind,
                 runtime().runners.spec(kind).model or "demo")
        runtime().warm_up(kind)


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    """Log what the batchers did (batch sizes show whether requests were merged)."""
    if _runtime is None:
        return
    for kind in _served or list(KINDS):
        stats = _runtime.status(kind, worker="").batching
        log.info("%s: %d batches, %d requests, largest batch %d", kind, stats.batches, stats.items,
                 stats.max_batch)
