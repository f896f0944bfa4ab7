"""The result backend of the guard workers: Celery's Redis backend, one round trip per result.

Celery's backend reads a task's stored result before writing it (so a lost-then-redelivered task
cannot overwrite a success). A guard task always succeeds (failures travel inside the reply), and a
redelivered task writes the same answer, so that read only adds a Redis round trip to every check.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend
from celery.utils.serialization import bytes_to_str


class GuardRedisBackend(RedisBackend):
    def _store_result(self, task_id: Any, result: Any, state: str, traceback: Any = None, request: Any = None,
                      **kwargs: Any) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        return result


def backend_url(url: str) -> str:
    """``url`` with this backend class for a Redis URL (Celery's ``class+url`` form)."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return f"{__name__}:GuardRedisBackend+{url}"
    return url
