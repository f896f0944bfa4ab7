"""Await Celery task results from the Redis result backend on the event loop, no thread per wait.

Celery's Redis backend stores a task's result under ``celery-task-meta-<id>`` and publishes the same
value on a channel of that name. ``ResultListener`` keeps one pub/sub connection per event loop: a
caller subscribes to its task's channel *before* publishing the task, and one reader coroutine
hands each result to its waiter and unsubscribes. A caller that saw nothing by its deadline reads
the stored result once (``fetch``) before giving up, so a missed message costs time, not a result.

If the connection drops, every pending waiter fails at once with ``ModelUnavailable`` (a client
must not hang on a dead Redis) and the next ``expect`` connects again, so the client recovers by
itself when Redis is back.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from guard.errors import ModelUnavailable

TASK_KEY_PREFIX = "celery-task-meta-"


class ResultListener:
    def __init__(self, url: str, *, connect_timeout: float = 1.0) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._leaving: set[str] = set()
        self._connecting = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._waiters)

    async def expect(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        """Subscribe to ``task_id``'s result; the future resolves with Celery's result meta.

        Returns once the SUBSCRIBE is written, not confirmed: Redis reads it before the task the
        caller publishes next has even reached a worker. Should a result still be missed (or the
        connection blip), ``fetch`` reads the stored copy.
        """
        channel = TASK_KEY_PREFIX + task_id
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[channel] = waiter
        try:
            pubsub = await self._connect()
            await pubsub.subscribe(channel)
        except (RedisError, OSError, TimeoutError) as error:
            self._waiters.pop(channel, None)
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
        """Stop waiting for ``task_id`` (after a timeout); its channel is dropped lazily."""
        channel = TASK_KEY_PREFIX + task_id
        if self._waiters.pop(channel, None) is not None and self._pubsub is not None:
            self._unsubscribe_soon(channel)

    async def aclose(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
        await self._drop(ModelUnavailable("result listener closed"))

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> Any:
        if self._pubsub is not None:
            return self._pubsub
        async with self._connecting:
            if self._pubsub is None:
                client = aioredis.Redis.from_url(
                    self._url, socket_connect_timeout=self._connect_timeout,
                    retry=Retry(NoBackoff(), 0), health_check_interval=0)
                pubsub = client.pubsub()
                try:
                    await pubsub.connect()
                except BaseException:
                    await client.aclose()
                    raise
                self._client, self._pubsub = client, pubsub
                self._reader = asyncio.get_running_loop().create_task(self._read(pubsub))
        return self._pubsub

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
                if message is not None:
                    self._dispatch(message)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, RuntimeError) as error:
            if self._pubsub is pubsub:
                self._reader = None
                await self._drop(ModelUnavailable(f"lost the result backend connection: {error}"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return  # (un)subscribe confirmations
        channel = _text(message.get("channel"))
        waiter = self._waiters.pop(channel, None)
        self._unsubscribe_soon(channel)
        if waiter is not None and not waiter.done():
            try:
                waiter.set_result(json.loads(message["data"]))
            except ValueError as error:
                waiter.set_exception(ModelUnavailable(f"unreadable result on {channel}: {error}"))

    def _unsubscribe_soon(self, channel: str) -> None:
        """Drop ``channel`` with the others answered in this loop iteration: one UNSUBSCRIBE."""
        if self._pubsub is None:
            return
        if not self._leaving:
            asyncio.get_running_loop().call_soon(self._flush_unsubscribes)
        self._leaving.add(channel)

    def _flush_unsubscribes(self) -> None:
        channels, self._leaving = self._leaving, set()
        pubsub = self._pubsub
        if pubsub is not None and channels:
            asyncio.get_running_loop().create_task(self._unsubscribe(pubsub, channels))

    async def _unsubscribe(self, pubsub: Any, channels: set[str]) -> None:
        try:
            await pubsub.unsubscribe(*channels)
        except (RedisError, OSError):
            pass  # the reader notices a dead connection on its own


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
