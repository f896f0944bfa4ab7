"""Await Celery task results from the Redis result backend on the event loop, no thread per wait.

The guard workers' result backend (``workers/backend.py``) stores a task's result under
``celery-task-meta-<id>`` and publishes the same value on the task's ``reply_to`` channel when it is
a guard reply channel (``REPLY_CHANNEL_PREFIX``), else on a channel named like the key (Celery's
way). ``ResultListener`` keeps one pub/sub connection per event loop, subscribed once to its own
reply channel, which every task it waits for names; one reader coroutine hands each result to its
waiter by task id. So a task costs the client no SUBSCRIBE/UNSUBSCRIBE, and Redis no channel
bookkeeping. The channel is subscribed before the first task is published (the SUBSCRIBE is
written first, so Redis reads it first). A caller that saw nothing by its deadline reads the stored
result once (``fetch``) before giving up, so a missed message costs time, not a result.

If the connection drops, every pending waiter fails at once with ``ModelUnavailable`` (a client
must not hang on a dead Redis) and the next ``expect`` connects and subscribes again, so the client
recovers by itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from guard.errors import ModelUnavailable
from guard.executor.wire import REPLY_CHANNEL_PREFIX

TASK_KEY_PREFIX = "celery-task-meta-"


class ResultListener:
    def __init__(self, url: str, *, connect_timeout: float = 1.0) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        #: The channel this listener's tasks name as ``reply_to``.
        self.channel = f"{REPLY_CHANNEL_PREFIX}{uuid.uuid4().hex}"
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._connecting = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._waiters)

    async def expect(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future resolved with ``task_id``'s result meta (Celery's), once it is published."""
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[task_id] = waiter
        if self._pubsub is None:
            try:
                await self._connect()
            except (RedisError, OSError, TimeoutError) as error:
                self._waiters.pop(task_id, None)
                raise ModelUnavailable(f"result backend unreachable: {error or type(error).__name__}") from None
        return waiter

    async def fetch(self, task_id: str) -> dict[str, Any] | None:
        """The stored result of ``task_id`` (None if there is none, or Redis cannot be read)."""
        client = self._client
        if client is None:
            return None
        try:
            raw = await client.get(TASK_KEY_PREFIX + task_id)
        except (RedisError, OSError):
            return None
        return json.loads(raw) if raw else None

    def forget(self, task_id: str) -> None:
        """Stop waiting for ``task_id`` (answered, or timed out: a late answer is dropped)."""
        self._waiters.pop(task_id, None)

    async def aclose(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
        await self._drop(ModelUnavailable("result listener closed"))

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> None:
        async with self._connecting:
            if self._pubsub is not None:
                return
            client = aioredis.Redis.from_url(
                self._url, socket_connect_timeout=self._connect_timeout,
                retry=Retry(NoBackoff(), 0), health_check_interval=0)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
            except BaseException:
                await client.aclose()
                raise
            self._client, self._pubsub = client, pubsub
            self._reader = asyncio.get_running_loop().create_task(self._read(pubsub))

    async def _drop(self, error: Exception) -> None:
        """Forget the connection and fail everything still waiting on it."""
        client, pubsub = self._client, self._pubsub
        self._client = self._pubsub = None
        waiters = list(self._waiters.values())
        self._waiters.clear()
        for future in waiters:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: a waiter nobody awaits any more must not log
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except (RedisError, OSError):
                pass
        if client is not None:
            try:
                await client.aclose()
            except (RedisError, OSError):
                pass

    # ------------------------------------------------------------------ reader

    async def _read(self, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message.get("type") == "message":
                    self._dispatch(message["data"])
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, RuntimeError) as error:
            if self._pubsub is pubsub:
                self._reader = None
                await self._drop(ModelUnavailable(f"lost the result backend connection: {error}"))

    def _dispatch(self, data: bytes | str) -> None:
        try:
            meta = json.loads(data)
            task_id = meta["task_id"]
        except (ValueError, KeyError, TypeError):
            return  # not a result meta: nobody to hand it to
        waiter = self._waiters.pop(task_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(meta)
