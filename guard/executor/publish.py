"""Publish Celery tasks to a Redis broker from the event loop: one LPUSH, no thread, no kombu.

The task message is Celery's protocol 2 (the headers, body and properties ``app.amqp.as_task_v2``
makes, ``tests/workers/test_publish.py`` compares them) in the envelope the kombu Redis transport
wraps it in: JSON with the body base64-encoded, ``delivery_info`` naming the anonymous exchange and
the queue (what Celery itself does for a direct queue), pushed on the list named after the queue
(priority 0). Workers cannot tell these messages from ``send_task``'s; ``tests/workers`` runs real
workers on them. ``reply_to`` names the client's result channel (``guard.executor.results``).

Why not ``send_task`` on a thread: kombu's publish costs ~0.5 ms of CPU per task and a thread hop
under the GIL. Why not ``as_task_v2`` either: it reads a dozen Celery settings, the clock and the
host name per call (~0.1-0.4 ms of CPU); here the constant part of the message is made once and a
task costs one ``json.dumps`` of its headers and one round trip.

Because this module writes the list entry itself, it knows the exact entry and its delivery tag, so
it can also say where a published task is now (``locate``): still in the queue, reserved by a worker
(kombu's ``unacked`` hash, keyed by delivery tag), or neither. ``guard.executor.redelivery`` uses
that to find tasks a killed worker took with it.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, replace
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from datetime import datetime, timezone
from typing import Literal

import redis.asyncio as aioredis
from celery.utils.nodenames import anon_nodename
from kombu.transport.redis import Channel as RedisChannel
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from guard.errors import ModelUnavailable

#: kombu's Redis transport persists messages (``delivery_mode`` 2) and sends protocol 2 as JSON.
DELIVERY_MODE_PERSISTENT = 2
#: The third part of a protocol 2 body: no callbacks, errbacks, chain or chord.
EMBED = '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}'

#: Where a published task is: in its queue, reserved (taken by a worker, not yet acknowledged),
#: neither (answered, on its way to a worker, or lost), or not known (Redis could not be read).
Whereabouts = Literal["queued", "reserved", "neither", "unknown"]


def _quote(text: str) -> str:
    """``text`` as a JSON string, exactly as ``json.dumps`` writes it."""
    return encode_basestring_ascii(text)


@dataclass(frozen=True)
class Sent:
    """One published copy of a task, and how to recognise it in Redis."""

    name: str
    #: The task's positional arguments, as a JSON array.
    args_json: str
    queue: str
    task_id: str
    #: The channel the worker publishes the result on.
    reply_to: str
    #: The list entry exactly as pushed (a copy the broker re-queued carries a ``redelivered`` flag).
    entry: str
    delivery_tag: str
    #: ``time.monotonic()`` after which workers drop the task (Celery's ``expires``).
    expires_at: float


class RedisTaskPublisher:
    """Sends tasks by name to queues of a Redis broker; one per event loop."""

    def __init__(self, url: str, *, unacked_key: str = RedisChannel.unacked_key, connect_timeout: float = 1.0,
                 socket_timeout: float = 5.0) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"not a Redis broker URL: {url}")
        self._unacked_key = unacked_key
        self._origin = anon_nodename()
        self._templates: dict[tuple[str, str, str], str] = {}
        # One retry: a pooled connection left dead by a Redis restart is replaced at once.
        self._client = aioredis.Redis.from_url(url, socket_connect_timeout=connect_timeout,
                                               socket_timeout=socket_timeout, retry=Retry(NoBackoff(), 1),
                                               health_check_interval=0)

    def message(self, name: str, args_json: str, queue: str, task_id: str, expires_s: float, *,
                delivery_tag: str, reply_to: str = "") -> str:
        """The Redis list entry for one task (what kombu would push for ``as_task_v2``'s message).

        The same text as ``json.dumps`` of the envelope, made from a template per (task, queue,
        reply channel): only the id, expiry, body and tag are encoded per call (~0.1 ms less)."""
        template = self._templates.get((name, queue, reply_to))
        if template is None:
            template = self._templates[(name, queue, reply_to)] = self._template(name, queue, reply_to)
        expires = datetime.fromtimestamp(time.time() + expires_s, timezone.utc).isoformat()
        body = base64.b64encode(f"[{args_json}, {{}}, {EMBED}]".encode()).decode()
        return template.format(id=_quote(task_id), expires=_quote(expires), body=_quote(body),
                               tag=_quote(delivery_tag))

    def _template(self, name: str, queue: str, reply_to: str) -> str:
        marks = {field: f"@@guard-{field}@@" for field in ("id", "expires", "body", "tag")}
        headers = {
            "lang": "py", "task": name, "id": marks["id"], "shadow": None, "eta": None,
            "expires": marks["expires"], "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": marks["id"], "parent_id": None,
            "argsrepr": f"<{name} call>", "kwargsrepr": "{}", "origin": self._origin, "ignore_result": False,
            "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        }
        properties = {
            "correlation_id": marks["id"],
            "reply_to": reply_to,
            "delivery_mode": DELIVERY_MODE_PERSISTENT,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": marks["tag"],
        }
        text = json.dumps({
            "body": marks["body"],
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }).replace("{", "{{").replace("}", "}}")
        for field, mark in marks.items():
            text = text.replace(_quote(mark), "{" + field + "}")
        return text

    async def publish(self, name: str, args_json: str, queue: str, task_id: str, expires_s: float,
                      reply_to: str = "") -> Sent:
        tag = uuid.uuid4().hex
        sent = Sent(name=name, args_json=args_json, queue=queue, task_id=task_id, reply_to=reply_to,
                    delivery_tag=tag, expires_at=time.monotonic() + expires_s,
                    entry=self.message(name, args_json, queue, task_id, expires_s, delivery_tag=tag,
                                       reply_to=reply_to))
        await self._push(sent)
        return sent

    async def republish(self, sent: Sent) -> Sent:
        """Another copy of ``sent``: same task id (the first answer wins), same expiry, new tag."""
        tag = uuid.uuid4().hex
        expires_s = max(sent.expires_at - time.monotonic(), 0.001)
        again = replace(sent, delivery_tag=tag, entry=self.message(
            sent.name, sent.args_json, sent.queue, sent.task_id, expires_s, delivery_tag=tag,
            reply_to=sent.reply_to))
        await self._push(again)
        return again

    async def locate(self, sent: Sent) -> Whereabouts:
        """Where ``sent`` is now, read in one transaction (a consistent snapshot of the broker)."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lpos(sent.queue, sent.entry)
                pipe.hexists(self._unacked_key, sent.delivery_tag)
                position, reserved = await pipe.execute()
        except (RedisError, OSError):
            return "unknown"
        if position is not None:
            return "queued"
        return "reserved" if reserved else "neither"

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass

    async def _push(self, sent: Sent) -> None:
        try:
            await self._client.lpush(sent.queue, sent.entry)
        except (RedisError, OSError) as error:
            raise ModelUnavailable(f"broker unreachable: {error}") from None
