"""Publish Celery tasks to a Redis broker from the event loop: one LPUSH, no thread, no kombu.

The task message is Celery's own (``app.amqp.as_task_v2``: protocol 2 headers and body); only the
envelope the kombu Redis transport wraps it in is written here: JSON with the body base64-encoded,
``delivery_info`` naming the anonymous exchange and the queue (which is what Celery itself does for
a direct queue), pushed on the list named after the queue (priority 0). Workers cannot tell these
messages from ``send_task``'s; ``tests/workers`` runs real workers on them.

Why not ``send_task`` on a thread: kombu's publish costs ~0.5 ms of CPU per task and a thread hop
under the GIL; this costs one round trip on an asyncio connection.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis.asyncio as aioredis
from celery import Celery
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from guard.errors import ModelUnavailable

#: kombu's Redis transport persists messages (``delivery_mode`` 2) and sends protocol 2 as JSON.
DELIVERY_MODE_PERSISTENT = 2


class RedisTaskPublisher:
    """Sends tasks by name to queues of a Redis broker; one per event loop."""

    def __init__(self, app: Celery, url: str, *, connect_timeout: float = 1.0,
                 socket_timeout: float = 5.0) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"not a Redis broker URL: {url}")
        self._app = app
        # One retry: a pooled connection left dead by a Redis restart is replaced at once.
        self._client = aioredis.Redis.from_url(url, socket_connect_timeout=connect_timeout,
                                               socket_timeout=socket_timeout, retry=Retry(NoBackoff(), 1),
                                               health_check_interval=0)

    def message(self, name: str, args: list[Any], queue: str, task_id: str, expires_s: float) -> str:
        """The Redis list entry for one task (what kombu would push)."""
        task = self._app.amqp.as_task_v2(task_id, name, args=args, expires=expires_s,
                                         argsrepr=f"<{name} call>", kwargsrepr="{}")
        body = json.dumps(task.body).encode()
        properties = {
            **task.properties,
            "delivery_mode": DELIVERY_MODE_PERSISTENT,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        }
        return json.dumps({
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": task.headers,
            "properties": properties,
        })

    async def publish(self, name: str, args: list[Any], queue: str, task_id: str, expires_s: float) -> None:
        try:
            await self._client.lpush(queue, self.message(name, args, queue, task_id, expires_s))
        except (RedisError, OSError) as error:
            raise ModelUnavailable(f"broker unreachable: {error}") from None

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass
