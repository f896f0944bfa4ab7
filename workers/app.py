"""The Celery app serving the guard models: ``celery -A workers.app worker -Q llama_guard``.

Broker and result backend come from ``GUARD_BROKER_URL`` / ``GUARD_RESULT_BACKEND`` (Redis on
localhost by default; the result backend defaults to the broker). One queue per model kind.

Choices, and why:

* **threads pool** (``worker_pool = "threads"``, ``worker_concurrency`` threads): many tasks run at
  once in one process and wait on the process's micro-batcher (``guard.batching``), so requests
  that arrive together share one forward pass; the model lives once per process, and no fork
  happens after CUDA init. Time limits are not enforced by this pool: each task bounds its own wait
  by the caller's timeout, and the client sets ``expires`` so a task that waited too long in the
  queue is dropped instead of run.
* **acks late + reject on worker lost**: a task is acknowledged after it ran, so a killed worker's
  tasks go back to the queue. With Redis that happens after ``broker_visibility_timeout_s`` (swept
  every ``broker_restore_interval_s`` by any live worker).
* **prefetch multiplier 1**: a worker reserves at most ``concurrency`` tasks; with many threads that
  is already plenty to form batches, and tasks are not hoarded while another worker idles.
* **a lean path for the guard tasks** (``workers.strategy``, named by the tasks): Celery's consumer
  and pool, without its per-task request, tracer, signals and events.
* **unacked bookkeeping off the event loop** (``workers.broker``): kombu's Redis transport, with
  each task's record and acknowledgement written by a recorder thread, batched, on one client.
* **fail fast**: short connect timeouts and a short publish retry, so a client sees a broker outage
  as an error in well under a second instead of hanging, and reconnects when Redis is back.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from guard.executor.wire import KINDS, PING_TASK, QUEUES, TASKS
from workers.backend import backend_url as guard_backend_url
from workers.broker import TRANSPORT as GUARD_TRANSPORT
from guard.settings import GuardSettings, get_settings

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
#: Seconds a stored result stays in Redis: long enough for any waiting client, short enough not to pile up.
RESULT_EXPIRES_S = 300
CONNECT_TIMEOUT_S = 1.0
SOCKET_TIMEOUT_S = 5.0
#: A publish is retried this often (covers one stale pooled connection after Redis restarted).
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}


def broker_url(settings: GuardSettings) -> str:
    return settings.broker_url or DEFAULT_BROKER


def result_backend_url(settings: GuardSettings) -> str:
    return settings.result_backend or broker_url(settings)


def transport_options(settings: GuardSettings) -> dict[str, Any]:
    return {
        "visibility_timeout": settings.broker_visibility_timeout_s,
        "unacked_restore_interval": settings.broker_restore_interval_s,
        "unacked_restore_throttle": 1,
        # The sweep holds a Redis mutex for milliseconds; if a worker dies holding it, the next
        # sweep may run after this many seconds (kombu's default, 300 s, would stall redelivery).
        "unacked_mutex_expire": 10,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "retry_on_timeout": False,
    }


def celery_config(settings: GuardSettings, *, with_backend: bool = True) -> dict[str, Any]:
    """The Celery settings shared by workers and clients (clients pass ``with_backend=False``)."""
    hard_limit = settings.check_timeout_s * 2
    return {
        "broker_url": broker_url(settings),
        "broker_transport": GUARD_TRANSPORT if broker_url(settings).startswith("redis://") else None,
        "result_backend": guard_backend_url(result_backend_url(settings)) if with_backend else None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_queues": [Queue(QUEUES[kind], Exchange(QUEUES[kind]), routing_key=QUEUES[kind])
                        for kind in KINDS],
        "task_default_queue": QUEUES["prompt_guard"],
        "task_routes": {TASKS[kind]: {"queue": QUEUES[kind]} for kind in KINDS},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_time_limit": hard_limit,
        "task_soft_time_limit": settings.check_timeout_s * 1.5,
        "result_expires": RESULT_EXPIRES_S,
        "task_publish_retry": True,
        "task_publish_retry_policy": PUBLISH_RETRY,
        "broker_transport_options": transport_options(settings),
        "broker_connection_timeout": CONNECT_TIMEOUT_S,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "redis_socket_connect_timeout": CONNECT_TIMEOUT_S,
        "redis_socket_timeout": SOCKET_TIMEOUT_S,
        "redis_retry_on_timeout": False,
        "redis_backend_health_check_interval": 10,
        "worker_pool": "threads",
        "worker_concurrency": settings.worker_concurrency,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }


def create_app(settings: GuardSettings | None = None) -> Celery:
    app = Celery("guard", include=["workers.tasks"])
    app.conf.update(celery_config(settings or get_settings()))
    return app


app = create_app()

__all__ = ["app", "create_app", "celery_config", "PING_TASK"]
