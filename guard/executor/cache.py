"""A result cache around any executor: a judgement already made is not made again.

The gateway is stateless, and a chat application re-sends the whole history with every request; with
``context.judge: all`` every earlier turn's window is judged again each time, although the previous
request already judged exactly the same window. ``CachingExecutor`` keeps the successful results of
the executor it wraps (in-process or Celery) in an in-memory LRU, so only the new windows reach a
model.

The key is a SHA-256 of everything a result depends on: the guard kind, the model as this process
knows it (its ``ModelSpec``: id, revision, family, dtype, device, Prompt Guard overlap) and the
request itself as pydantic dumps it (conversation or text, categories in their order, exclusions,
role, decode, overflow, source, schema version). A result is stored as the model gave it; a hit
returns it with ``cached=True`` and ``latency_ms=0`` (no model time was spent on this request), every
other field equal, so the decision is the one a fresh judgement gives. Workers behind a broker may be
redeployed with another model than this process's settings name: when a fresh result reports a
model (``ModelInfo``) other than the one the cached results came from, that kind's entries are
dropped.

Only results are cached, never an error or a timeout: a failed call raises from the wrapped
executor and leaves nothing behind. Identical requests within one call are sent once (the repeats
count and are marked as hits). Requests of *concurrent* calls are not merged: each sends its misses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from guard import metrics
from guard.executor.base import Executor
from guard.executor.wire import KINDS, Kind, WorkerStatus
from guard.models.registry import ModelSpec
from guard.settings import GuardSettings
from guard.types import LlamaGuardRequest, LlamaGuardResult, ModelInfo, PromptGuardRequest, PromptGuardResult

R = TypeVar("R", LlamaGuardResult, PromptGuardResult)


class ResultCache:
    """A bounded, thread-safe LRU of guard results by key (oldest use evicted first)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a result cache holds at least one entry")
        self.size = size
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Any | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, keep: Callable[[Any], bool]) -> None:
        """Remove every entry whose value ``keep`` rejects."""
        with self._lock:
            for key in [k for k, v in self._entries.items() if not keep(v)]:
                del self._entries[key]


class CachingExecutor:
    """The ``Executor`` protocol around ``inner``, answering repeated requests from a ``ResultCache``."""

    def __init__(self, inner: Executor, *, size: int, models: dict[Kind, str] | None = None) -> None:
        self.inner = inner
        self.cache = ResultCache(size)
        #: Per kind, the identity of the configured model (part of every key).
        self._models = models or {}
        #: Per kind, the model the cached results came from (set by the first fresh result).
        self._seen: dict[Kind, ModelInfo] = {}

    @classmethod
    def wrap(cls, inner: Executor, settings: GuardSettings) -> Executor:
        """``inner`` behind a cache of ``GUARD_JUDGEMENT_CACHE_SIZE`` results; ``inner`` itself when 0."""
        if settings.judgement_cache_size <= 0:
            return inner
        models: dict[Kind, str] = {kind: json.dumps(dataclasses.asdict(ModelSpec.from_settings(settings, kind)),
                                                    sort_keys=True) for kind in KINDS}
        return cls(inner, size=settings.judgement_cache_size, models=models)

    async def llama_guard(self, requests: Sequence[LlamaGuardRequest],
                          timeout: float) -> list[LlamaGuardResult]:
        return await self._judge("llama_guard", self.inner.llama_guard, requests, timeout)

    async def prompt_guard(self, requests: Sequence[PromptGuardRequest],
                           timeout: float) -> list[PromptGuardResult]:
        return await self._judge("prompt_guard", self.inner.prompt_guard, requests, timeout)

    async def status(self) -> list[WorkerStatus]:
        return await self.inner.status()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # The wrapped executor's extras (``warm_up``, ``aclose``, ...) stay reachable.
        return getattr(self.inner, name)

    def key(self, kind: Kind, request: LlamaGuardRequest | PromptGuardRequest) -> str:
        # model_dump_json keeps field order and dict insertion order (the prompt lists categories in
        # that order), so two requests share a key only when the runner sees the same input.
        text = "\n".join((kind, self._models.get(kind, ""), request.model_dump_json()))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    async def _judge(self, kind: Kind, call: Callable[[Sequence[Any], float], Awaitable[list[R]]],
                     requests: Sequence[Any], timeout: float) -> list[R]:
        results: list[R | None] = [None] * len(requests)
        missing: dict[str, list[int]] = {}  # key -> indices of the requests waiting for it
        for index, request in enumerate(requests):
            key = self.key(kind, request)
            hit = self.cache.get(key)
            if hit is not None:
                results[index] = _from_cache(hit)
            else:
                missing.setdefault(key, []).append(index)
        if missing:
            fresh = await call([requests[indices[0]] for indices in missing.values()], timeout)
            self._note_model(kind, fresh)
            for (key, (first, *repeats)), result in zip(missing.items(), fresh, strict=True):
                self.cache.put(key, result)
                results[first] = result
                for index in repeats:
                    results[index] = _from_cache(result)
        sent = len(missing)
        if len(requests) > sent:
            metrics.JUDGEMENT_CACHE.labels(guard=kind, result="hit").inc(len(requests) - sent)
        if sent:
            metrics.JUDGEMENT_CACHE.labels(guard=kind, result="miss").inc(sent)
        return [r for r in results if r is not None]

    def _note_model(self, kind: Kind, fresh: Sequence[LlamaGuardResult | PromptGuardResult]) -> None:
        """Drop ``kind``'s entries when the wrapped executor now answers with another model."""
        for result in fresh:
            seen = self._seen.get(kind)
            if seen is not None and result.model != seen:
                self.cache.drop(lambda cached: not (_kind_of(cached) == kind and cached.model != result.model))
            self._seen[kind] = result.model


def _kind_of(result: LlamaGuardResult | PromptGuardResult) -> Kind:
    return "llama_guard" if isinstance(result, LlamaGuardResult) else "prompt_guard"


def _from_cache(result: R) -> R:
    """A cached result as answered again: marked, and no model time spent on it."""
    return result.model_copy(update={"cached": True, "latency_ms": 0.0})
