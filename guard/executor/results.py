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

The reply connection is read by a small asyncio protocol (``_ReplyProtocol``) rather than redis-py's
``PubSub``: it only ever receives ``message`` frames on one channel, so it parses them where the
bytes arrive (``data_received``) and hands each result to its waiter there, with no reader
coroutine and no redis-py response machinery per result (~0.1 ms of client CPU on the path of
every check). ``rediss://`` URLs keep redis-py's pub/sub (its TLS options). Stored results
(``fetch``) are read through redis-py.

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
from redis.asyncio.connection import parse_url
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
        self._closing: asyncio.Task[None] | None = None

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
            try:
                if self._url.startswith("rediss://"):
                    pubsub: Any = client.pubsub()
                    await pubsub.subscribe(self.channel)
                else:
                    pubsub = await asyncio.wait_for(_ReplyProtocol.subscribe(self, self._url, self.channel),
                                                    self._connect_timeout)
            except BaseException:
                await client.aclose()
                raise
            self._client, self._pubsub = client, pubsub
            if not isinstance(pubsub, _ReplyProtocol):
                self._reader = asyncio.get_running_loop().create_task(self._read(pubsub))

    def _lost(self, protocol: _ReplyProtocol, error: BaseException | None) -> None:
        """The reply connection closed: fail the waiters now (``_ReplyProtocol.connection_lost``)."""
        if self._pubsub is protocol:
            detail = error or "closed by the server"
            task = asyncio.get_running_loop().create_task(
                self._drop(ModelUnavailable(f"lost the result backend connection: {detail}")))
            self._closing = task

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
        if isinstance(pubsub, _ReplyProtocol):
            pubsub.close()
        elif pubsub is not None:
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


class _RespError(RedisError):
    """An error reply of Redis (``-ERR ...``)."""


_INCOMPLETE: Any = object()


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 value of ``buf`` at ``pos`` and the position after it (``_INCOMPLETE`` if cut)."""
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return _INCOMPLETE, pos
    kind, line, pos = buf[pos:pos + 1], buf[pos + 1:nl], nl + 2
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, pos
        end = pos + size
        if len(buf) < end + 2:
            return _INCOMPLETE, pos
        return buf[pos:end], end + 2
    if kind == b"*":
        count = int(line)
        items = []
        for _ in range(max(count, 0)):
            item, pos = _parse(buf, pos)
            if item is _INCOMPLETE:
                return _INCOMPLETE, pos
            items.append(item)
        return items, pos
    if kind == b":":
        return int(line), pos
    if kind == b"+":
        return line, pos
    if kind == b"-":
        return _RespError(line.decode(errors="replace")), pos
    raise ValueError(f"not a RESP reply: {buf[pos:pos + 20]!r}")


def _command(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in encoded)


class _ReplyProtocol(asyncio.Protocol):
    """The reply channel's connection: AUTH if the URL has a password, SUBSCRIBE, then messages."""

    def __init__(self, listener: ResultListener) -> None:
        self._listener = listener
        self._buf = b""
        self._transport: asyncio.Transport | None = None
        self._subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def subscribe(cls, listener: ResultListener, url: str, channel: str) -> _ReplyProtocol:
        options = parse_url(url)
        loop = asyncio.get_running_loop()
        protocol = cls(listener)
        if "path" in options:
            await loop.create_unix_connection(lambda: protocol, options["path"])
        else:
            await loop.create_connection(lambda: protocol, options.get("host", "localhost"),
                                         options.get("port", 6379))
        assert protocol._transport is not None
        try:
            commands = b""
            if options.get("password"):
                auth = [options["username"]] if options.get("username") else []
                commands += _command("AUTH", *auth, options["password"])
            protocol._transport.write(commands + _command("SUBSCRIBE", channel))
            await protocol._subscribed
        except BaseException:
            protocol.close()
            raise
        return protocol

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._subscribed.done():
            self._subscribed.set_exception(ConnectionError(f"connection closed: {exc}"))
            self._subscribed.exception()
        self._listener._lost(self, exc)  # noqa: SLF001 - its own protocol

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos = 0
        try:
            while pos < len(buf):
                frame, end = _parse(buf, pos)
                if frame is _INCOMPLETE:
                    break
                pos = end
                self._frame(frame)
        except ValueError as error:  # not Redis speaking: drop the connection, waiters fail
            self._buf = b""
            if not self._subscribed.done():
                self._subscribed.set_exception(ConnectionError(str(error)))
            self.close()
            return
        self._buf = buf[pos:]

    def _frame(self, frame: Any) -> None:
        if isinstance(frame, list) and len(frame) == 3:
            if frame[0] == b"message":
                self._listener._dispatch(frame[2])  # noqa: SLF001 - its own protocol
            elif frame[0] == b"subscribe" and not self._subscribed.done():
                self._subscribed.set_result(None)
        elif isinstance(frame, _RespError) and not self._subscribed.done():
            self._subscribed.set_exception(frame)
