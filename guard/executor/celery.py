"""The Celery executor: guard requests go through Redis queues to ``guard worker`` processes.

Calls made together are sent together: every call queues its requests, and once per event-loop
iteration the requests queued for a model kind leave as one task (at most ``max_batch_size``
requests each; more make several tasks). A lone call therefore waits for nothing, and under load a
task carries many requests, which keeps the per-task cost of Celery and Redis (a few round trips
and ~1 ms of CPU) off each check. The worker's batcher then merges tasks from all clients. Answers
are per request, so one bad request fails only its own call.

Per task:

1. register a waiter with the loop's ``ResultListener`` (subscribed once to the client's reply
   channel, which the task names as ``reply_to``);
2. publish the task: one asyncio LPUSH of a Celery protocol 2 message (``RedisTaskPublisher``) on a
   Redis broker, else kombu's ``send_task`` on a thread (it blocks; never on the event loop);
   ``expires`` = the longest timeout in it, so a worker drops it if it comes too late;
3. await the result; each caller waits only up to its own timeout (``GuardTimeout``), after one
   last read of the stored result. A task still unanswered after the broker's visibility timeout
   is looked for and published again if a killed worker took it without recording it
   (``guard.executor.redelivery``).

The client's Celery app has no result backend of its own (Celery would otherwise open a second
subscription per task that nobody reads): results are read only through the listener. Workers must
run this version's result backend (``workers/backend.py``), which publishes on ``reply_to``: upgrade
workers before clients. Redis
connections belong to an event loop, so they are kept per loop.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from guard.errors import GuardTimeout, ModelUnavailable
from guard.executor.publish import RedisTaskPublisher
from guard.executor.redelivery import RedeliveryWatch
from guard.executor.results import ResultListener
from guard.executor.wire import (
    CALLS,
    KINDS,
    PING_TASK,
    QUEUES,
    REPLIES,
    STATUS_COMMAND,
    TASKS,
    Kind,
    WorkerStatus,
    error_from_info,
)
from guard.settings import GuardSettings, get_settings
from guard.types import LlamaGuardRequest, LlamaGuardResult, PromptGuardRequest, PromptGuardResult
from workers.app import broker_url, celery_config, result_backend_url

STATUS_TIMEOUT_S = 1.0
#: Callers wait this much past their timeout for the task's last read of the stored result.
FETCH_GRACE_S = 0.05
THREADS = 4
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class CeleryExecutor:
    def __init__(self, settings: GuardSettings | None = None, *, direct_publish: bool | None = None) -> None:
        self.settings = settings or get_settings()
        self.app = Celery("guard-client", set_as_current=False)
        self.app.conf.update(celery_config(self.settings, with_backend=False))
        #: Publish with one asyncio LPUSH (Redis brokers) rather than kombu on a thread.
        self.direct_publish = broker_url(self.settings).startswith(REDIS_SCHEMES) \
            if direct_publish is None else direct_publish
        self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="guard-celery")
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._closed = False

    async def llama_guard(self, requests: Sequence[LlamaGuardRequest],
                          timeout: float) -> list[LlamaGuardResult]:
        return await self._call("llama_guard", requests, timeout)

    async def prompt_guard(self, requests: Sequence[PromptGuardRequest],
                           timeout: float) -> list[PromptGuardResult]:
        return await self._call("prompt_guard", requests, timeout)

    async def ping(self, kind: Kind, timeout: float = 5.0) -> list[WorkerStatus]:
        """Ask one worker of ``kind``'s queue what it serves (the ``guard.ping`` task)."""
        meta = await self._roundtrip(PING_TASK, json.dumps([kind]), QUEUES[kind], timeout)
        return [WorkerStatus.model_validate(item) for item in _success(meta, PING_TASK)]

    async def status(self, timeout: float = STATUS_TIMEOUT_S) -> list[WorkerStatus]:
        """Every live worker's answer to the ``guard_status`` broadcast (waits ``timeout``)."""
        loop = asyncio.get_running_loop()
        replies = await loop.run_in_executor(self._threads, self._broadcast_status, timeout)
        found = [WorkerStatus.model_validate(item)
                 for reply in replies for answer in reply.values() for item in answer]
        return sorted(found, key=lambda s: (s.queue, s.worker))

    @property
    def republished(self) -> int:
        """Tasks published again because a killed worker took them unrecorded (``redelivery``)."""
        return sum(state.redelivery.republished for state in self._loops.values())

    def close(self) -> None:
        """Release everything; the connections of a running loop are closed on that loop."""
        if self._closed:
            return
        self._closed = True
        states, self._loops = list(self._loops.items()), {}
        for loop, state in states:
            if loop.is_running() and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(state.aclose(), loop)
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.app.close()

    async def aclose(self) -> None:
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.aclose()
        self.close()

    # ------------------------------------------------------------------ internals

    async def _call(self, kind: Kind, requests: Sequence[Any], timeout: float) -> list[Any]:
        if not requests:
            return []
        future = self._state().senders[kind].submit(list(requests), timeout)
        # This caller's own deadline (its task may carry a longer one): a timer, not wait_for, which
        # would cost a task and a shield per call.
        timer = asyncio.get_running_loop().call_later(timeout + FETCH_GRACE_S, _expire, future, kind, timeout)
        try:
            outcomes = await future
        finally:
            timer.cancel()
        results = []
        for outcome in outcomes:
            if outcome.error is not None:
                raise error_from_info(outcome.error)
            results.append(outcome.result)
        return results

    async def _send(self, kind: Kind, requests: list[Any], timeout: float) -> list[Any]:
        """One task: the outcome of each request, in order."""
        payload = CALLS[kind](requests=requests, timeout_s=timeout).model_dump_json()
        meta = await self._roundtrip(TASKS[kind], f"[{payload}]", QUEUES[kind], timeout)
        reply = REPLIES[kind].model_validate(_success(meta, kind))
        if reply.error is not None:
            raise error_from_info(reply.error)
        if len(reply.outcomes) != len(requests):
            raise ModelUnavailable(
                f"{kind}: worker answered {len(reply.outcomes)} outcomes for {len(requests)}")
        return list(reply.outcomes)

    async def _roundtrip(self, task: str, args_json: str, queue: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        state = self._state()
        task_id = str(uuid.uuid4())
        waiter = await state.listener.expect(task_id)
        try:
            sent = None
            if state.publisher is not None:
                sent = await state.publisher.publish(task, args_json, queue, task_id, timeout,
                                                     reply_to=state.listener.channel)
            else:
                await asyncio.get_running_loop().run_in_executor(
                    self._threads, self._publish, task, json.loads(args_json), queue, task_id, timeout,
                    state.listener.channel)
            meta = await state.redelivery.answer(waiter, sent, deadline)
            if meta is None:
                meta = await state.listener.fetch(task_id)  # answered, but the message was missed
            if meta is None:
                raise GuardTimeout(f"{task} did not answer within {timeout:g}s")
            return meta
        finally:
            state.listener.forget(task_id)

    def _publish(self, task: str, args: list[Any], queue: str, task_id: str, timeout: float,
                 reply_to: str) -> None:
        try:
            self.app.send_task(task, args=args, queue=queue, task_id=task_id, expires=timeout,
                               reply_to=reply_to, argsrepr=f"<{task} call>", kwargsrepr="{}")
        except (OperationalError, RedisError, OSError) as error:
            raise ModelUnavailable(f"broker unreachable: {error}") from None

    def _broadcast_status(self, timeout: float) -> list[dict[str, Any]]:
        try:
            return list(self.app.control.broadcast(STATUS_COMMAND, reply=True, timeout=timeout) or [])
        except (OperationalError, RedisError, OSError) as error:
            raise ModelUnavailable(f"broker unreachable: {error}") from None

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            if self._closed:
                raise ModelUnavailable("the Celery executor is closed")
            for old in [old for old in self._loops if old.is_closed()]:
                del self._loops[old]
            state = self._loops[loop] = _LoopState(self)
        return state


class _LoopState:
    """What the executor holds per event loop: result listener, publisher, one coalescer per kind."""

    def __init__(self, executor: CeleryExecutor) -> None:
        self.listener = ResultListener(result_backend_url(executor.settings))
        self.publisher = RedisTaskPublisher(broker_url(executor.settings)) \
            if executor.direct_publish else None
        self.redelivery = RedeliveryWatch(self.publisher, self.listener.fetch,
                                          executor.settings.broker_visibility_timeout_s)
        self.senders = {kind: _Coalescer(partial(executor._send, kind), executor.settings.max_batch_size)
                        for kind in KINDS}

    async def aclose(self) -> None:
        await self.listener.aclose()
        if self.publisher is not None:
            await self.publisher.aclose()


@dataclass
class _Queued:
    requests: list[Any]
    timeout: float
    future: asyncio.Future[list[Any]]


class _Coalescer:
    """Gathers the calls made in one event-loop iteration into tasks of at most ``max_requests``."""

    def __init__(self, send: Callable[[list[Any], float], Awaitable[list[Any]]], max_requests: int) -> None:
        self._send = send
        self._max = max(1, max_requests)
        self._queued: list[_Queued] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, requests: list[Any], timeout: float) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append(_Queued(requests, timeout, future))
        return future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        for group in _groups(queued, self._max):
            task = asyncio.get_running_loop().create_task(self._run(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, group: list[_Queued]) -> None:
        requests = [request for item in group for request in item.requests]
        try:
            outcomes = await self._send(requests, max(item.timeout for item in group))
        except BaseException as error:  # noqa: BLE001 - handed to every caller of the group
            for item in group:
                if not item.future.done():
                    item.future.set_exception(error)
                    item.future.exception()  # a caller that timed out must not log it
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        start = 0
        for item in group:
            end = start + len(item.requests)
            if not item.future.done():
                item.future.set_result(outcomes[start:end])
            start = end


def _expire(future: asyncio.Future[Any], kind: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(GuardTimeout(f"{kind} did not answer within {timeout:g}s"))


def _groups(queued: list[_Queued], max_requests: int) -> list[list[_Queued]]:
    """Consecutive calls packed into groups of at most ``max_requests`` requests (a larger call
    goes alone: its requests are never split)."""
    groups: list[list[_Queued]] = []
    size = 0
    for item in queued:
        if not groups or size + len(item.requests) > max_requests:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += len(item.requests)
    return groups


def _success(meta: dict[str, Any], what: str) -> Any:
    status = meta.get("status")
    if status == "SUCCESS":
        return meta.get("result")
    if status == "REVOKED":
        raise GuardTimeout(f"{what} expired before a worker took it")
    result = meta.get("result") or {}
    if isinstance(result, dict):
        detail = f"{result.get('exc_type', status)}: {result.get('exc_message', '')}"
    else:
        detail = str(result)
    raise ModelUnavailable(f"{what} failed on the worker: {detail}")
