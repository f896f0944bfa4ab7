"""The client's redelivery watch on a real Redis, with the worker's moves played by hand.

No worker runs here: the test pops and records entries itself, which is what a worker's BRPOP and
kombu's ``QoS.append`` do, so each state (queued, reserved, taken unrecorded, answered) is exact.
``test_faults.py`` covers the same with a real worker that is frozen and killed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from guard.executor.publish import RedisTaskPublisher
from guard.executor.redelivery import RedeliveryWatch
from guard.executor.results import TASK_KEY_PREFIX, ResultListener

UNACKED = "unacked"  # kombu's default key of reserved entries


def test_only_a_task_taken_but_never_recorded_is_published_again(redis_server: Any) -> None:
    url = redis_server.url

    async def scenario() -> None:
        publisher, listener = RedisTaskPublisher(url), ResultListener(url)
        watch = RedeliveryWatch(publisher, listener.fetch, every_s=0.1, confirm_s=0.05)
        broker = aioredis.Redis.from_url(url)
        queue = f"redelivery-test-{uuid.uuid4().hex}"
        task_id, tag = str(uuid.uuid4()), ""
        try:
            waiter = await listener.expect(task_id)
            sent = await publisher.publish("guard.prompt_guard", "[{}]", queue, task_id, 30)
            tag = sent.delivery_tag

            # waiting in the queue: looked at a few times, left alone
            assert await watch.answer(waiter, sent, time.monotonic() + 0.5) is None
            assert (watch.republished, await broker.llen(queue)) == (0, 1)

            # taken and recorded by a worker: the broker's sweep owns it
            entry = await broker.rpop(queue)
            await broker.hset(UNACKED, sent.delivery_tag, json.dumps([json.loads(entry), "", queue]))
            assert await watch.answer(waiter, sent, time.monotonic() + 0.5) is None
            assert (watch.republished, await broker.llen(queue)) == (0, 0)

            # taken, never recorded (the worker died in between): published again, once
            await broker.hdel(UNACKED, sent.delivery_tag)
            answer = asyncio.ensure_future(watch.answer(waiter, sent, time.monotonic() + 10))
            popped = await broker.brpop([queue], timeout=5)
            assert popped is not None, "the lost task was not published again"
            copy = json.loads(popped[1])
            assert copy["headers"]["id"] == task_id
            assert copy["properties"]["delivery_tag"] != sent.delivery_tag

            # the copy is taken unrecorded too, but its answer is stored (its pub/sub message
            # missed): the watch finds that answer instead of publishing a third copy
            meta = {"status": "SUCCESS", "result": {"outcomes": []}, "task_id": task_id}
            await broker.set(TASK_KEY_PREFIX + task_id, json.dumps(meta))
            assert await asyncio.wait_for(answer, 5) == meta
            assert watch.republished == 1 and await broker.llen(queue) == 0
        finally:
            await broker.delete(queue, TASK_KEY_PREFIX + task_id)
            await broker.hdel(UNACKED, tag)
            await broker.aclose()
            await listener.aclose()
            await publisher.aclose()

    asyncio.run(scenario())
