"""The result backend of the guard workers: Celery's Redis backend, one round trip per result.

Three differences from Celery's ``RedisBackend``:

* no read before the write. Celery reads a task's stored result before writing it (so a
  lost-then-redelivered task cannot overwrite a success). A guard task always succeeds (failures
  travel inside the reply), and a redelivered task writes the same answer, so that read would only
  add a Redis round trip to every check.
* the result is published on the task's ``reply_to`` channel when that is a guard client's reply
  channel (``REPLY_CHANNEL_PREFIX``), where the client listens once for all its tasks, instead of
  on a channel per task that the client would have to subscribe to and leave for every task. Other
  senders (``reply_to`` empty or Celery's own) get Celery's channel named like the key.
* one plain pipeline (PUBLISH, then SETEX) instead of a MULTI/EXEC transaction behind Celery's
  retry wrapper: the waiting caller hears first, and a stale pooled connection is retried once.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from celery.backends.redis import RedisBackend
from celery.utils.serialization import bytes_to_str

from guard.executor.wire import REPLY_CHANNEL_PREFIX


class GuardRedisBackend(RedisBackend):
    def _store_result(self, task_id: Any, result: Any, state: str, traceback: Any = None, request: Any = None,
                      **kwargs: Any) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        self._publish(task_id, meta, getattr(request, "reply_to", None))
        return result

    def publish_result(self, task_id: str, result: Any, state: str, reply_to: str | None, *,
                       keep_s: float | None = None) -> None:
        """Store and publish a result without Celery's request context (``workers.strategy``);
        the stored copy is kept ``keep_s`` seconds (at most ``result_expires``)."""
        meta = {"status": state, "result": result, "traceback": None, "children": [],
                "date_done": datetime.now(timezone.utc).isoformat()}
        self._publish(task_id, meta, reply_to, keep_s)

    def _publish(self, task_id: Any, meta: dict[str, Any], reply_to: Any, keep_s: float | None = None) -> None:
        meta["task_id"] = bytes_to_str(task_id)
        key = self.get_key_for_task(task_id)
        channel = reply_to if isinstance(reply_to, str) and reply_to.startswith(REPLY_CHANNEL_PREFIX) else key
        value = self.encode(meta)
        ttl = self.expires
        if keep_s is not None:
            keep = max(1, math.ceil(keep_s))
            ttl = min(ttl, keep) if ttl else keep
        try:
            self._store_and_publish(key, channel, value, ttl)
        except self.connection_errors:  # a pooled connection Redis dropped: once more, on a new one
            self._store_and_publish(key, channel, value, ttl)

    def _store_and_publish(self, key: Any, channel: Any, value: Any, ttl: float | None) -> None:
        """PUBLISH first (the caller is waiting), then the stored copy, in one round trip. Not a
        transaction: the copy is only read after a missed message, long after both are written."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.publish(channel, value)
            if ttl:
                pipe.setex(key, int(ttl), value)
            else:
                pipe.set(key, value)
            pipe.execute()


def backend_url(url: str) -> str:
    """``url`` with this backend class for a Redis URL (Celery's ``class+url`` form)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return f"{__name__}:GuardRedisBackend+{url}"
    return url
