"""Tasks a killed worker took with it: the client finds them and publishes them again.

kombu's Redis transport emulates acknowledgements in two steps: a worker pops a task with ``BRPOP``,
and only when its event loop has read the reply does it record the task in the ``unacked`` hash
(``QoS.append``, a second round trip). The broker's sweep re-queues what is in that hash once the
visibility timeout has passed, so a worker killed with tasks *recorded* loses nothing. A task that
Redis already popped but the worker had not yet recorded exists only in the dying process (in its
socket buffer, or between those two round trips) and is never redelivered: nothing in Redis names
it any more. The window is short for a healthy worker (the guard workers' transport,
``workers.broker``, writes the record from a recorder thread ~2 ms later, batched), but it lasts as
long as a worker is frozen (stopped, swapping, its event loop starved by the GIL) with a ``BRPOP``
outstanding, and a killed worker is often one that stopped responding first.

The client closes it, because it alone knows what it sent and is still waiting for. A task still
unanswered one visibility timeout after it was sent (or after it was last looked at) is looked
for (``RedisTaskPublisher.locate``): in its queue, or reserved by a worker, or answered (the
stored result, which also covers a missed pub/sub message). The broker and result lookups are made
in the order a task moves through them (queue, reserved, answered), so a task that moves meanwhile
is still seen. A task found nowhere, twice, ``confirm_s`` apart (a healthy worker records what it
popped within milliseconds), is lost: the same task is published again with the same id and the
same expiry. Checks are pure functions of their input, so a copy that turns out to be redundant
only costs a second run; its answer is equal, and the caller takes the first one that arrives.

Why tie it to the visibility timeout: it is the operator's statement of how long a task may take
before its worker is presumed dead, and it is when the broker re-queues a dead worker's recorded
tasks, so recorded and unrecorded tasks of a killed worker come back at about the same time. A
task normally answers in milliseconds, so the healthy path never looks at all; with the
production defaults (60 s visibility, 30 s check timeout) a check times out first, as before.

Cost when it does look: one MULTI round trip (``LPOS`` from the tail, where old entries are, and
``HEXISTS``) and one ``GET`` per overdue task and visibility period. A copy the broker itself
re-queued carries a ``redelivered`` flag, so it does not match the entry as sent; if such a copy is
still waiting in the queue when the client looks, the client adds one more copy (harmless, as
above).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from guard.errors import ModelUnavailable
from guard.executor.publish import RedisTaskPublisher, Sent

log = logging.getLogger("guard.executor")

#: Longest gap between the two lookups that must both find a task nowhere before it is re-published.
CONFIRM_S = 0.5

Meta = dict[str, Any]


class RedeliveryWatch:
    """Waits for a task's answer; re-publishes the task if it got lost on the way."""

    def __init__(self, publisher: RedisTaskPublisher | None, fetch: Callable[[str], Awaitable[Meta | None]],
                 every_s: float, confirm_s: float | None = None) -> None:
        self._publisher = publisher
        self._fetch = fetch
        self.every_s = every_s
        self.confirm_s = min(CONFIRM_S, every_s / 4) if confirm_s is None else confirm_s
        #: Tasks published again because they were lost (for tests and logs).
        self.republished = 0

    async def answer(self, waiter: asyncio.Future[Meta], sent: Sent | None, deadline: float) -> Meta | None:
        """The task's result meta, or None at ``deadline`` (``time.monotonic()``).

        Without ``sent`` (published through kombu, not this client's own LPUSH), it only waits."""
        look_at = time.monotonic() + self.every_s
        while True:
            if await _settled(waiter, min(look_at, deadline) if sent is not None else deadline):
                return waiter.result()
            if sent is None or time.monotonic() >= deadline:
                return None
            sent, meta = await self._look(waiter, sent, deadline)
            if meta is not None:
                return meta
            look_at = time.monotonic() + self.every_s

    async def _look(self, waiter: asyncio.Future[Meta], sent: Sent, deadline: float) -> tuple[Sent, Meta | None]:
        """Publish ``sent`` again if it is neither queued, reserved nor answered, twice in a row."""
        assert self._publisher is not None
        for attempt in range(2):
            if attempt and await _settled(waiter, min(time.monotonic() + self.confirm_s, deadline)):
                return sent, waiter.result()
            if await self._publisher.locate(sent) != "neither":
                return sent, None
            meta = await self._fetch(sent.task_id)
            if meta is not None:
                return sent, meta
        try:
            again = await self._publisher.republish(sent)
        except ModelUnavailable as error:
            log.warning("task %s (%s) is lost; publishing it again failed: %s", sent.task_id, sent.name, error)
            return sent, None
        self.republished += 1
        log.warning("task %s (%s) was taken by a worker that never recorded it; published it again",
                    sent.task_id, sent.name)
        return again, None


async def _settled(future: asyncio.Future[Meta], until: float) -> bool:
    """Whether ``future`` is done by ``until`` (``time.monotonic()``); never cancels it."""
    if not future.done():
        await asyncio.wait([future], timeout=max(until - time.monotonic(), 0.0))
    return future.done()
