"""Guarded streaming: the upstream's chunks are checked in windows of N pieces with overlap.

* ``hold_back``: a window is released only after its check passed (and was audited), so no
  unscanned text ever reaches the client; a blocked window is never sent.
* ``stream_first``: chunks are released at once and windows are checked beside the stream; the
  stream stops at the first violation the checks report.

Either way a blocked stream ends with one chunk whose ``finish_reason`` is ``content_filter``; the
caller then writes ``[DONE]``. A "piece" is one upstream chunk's text (OpenAI-compatible servers
send about one token per chunk). The upstream's own finishing chunk is held until the last window
passed, so a violation at the very end still ends the stream as ``content_filter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from guard.types import Action, Decision

StreamMode = Literal["hold_back", "stream_first"]
# (assistant text of the window with its overlap, window index) -> decision, already audited.
WindowCheck = Callable[[str, int], Awaitable[Decision]]

Chunk = dict[str, Any]


@dataclass(frozen=True)
class StreamSettings:
    mode: StreamMode = "hold_back"
    window_tokens: int = 64
    overlap_tokens: int = 16


@dataclass
class StreamOutcome:
    """What happened, for the caller's metrics and final record."""

    decisions: list[Decision] = field(default_factory=list)
    blocked_by: Decision | None = None
    released_pieces: int = 0

    @property
    def blocked(self) -> bool:
        return self.blocked_by is not None

    @property
    def action(self) -> Action:
        return Action.most_severe([d.effective_action for d in self.decisions])


def chunk_text(chunk: Chunk) -> str:
    """The text a chunk adds to the answer: content plus any tool-call argument fragments."""
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    text = delta.get("content") or ""
    for call in delta.get("tool_calls") or []:
        fn = call.get("function") or {}
        text += (fn.get("name") or "") + (fn.get("arguments") or "")
    return text


def _is_tail(chunk: Chunk) -> bool:
    """The finishing chunk (finish_reason set) and the usage-only chunk are held to the end."""
    choices = chunk.get("choices") or []
    return not choices or choices[0].get("finish_reason") is not None


class GuardedStream:
    def __init__(
        self, settings: StreamSettings, check: WindowCheck, *, refusal: str | None, redaction: str
    ) -> None:
        self.settings = settings
        self.outcome = StreamOutcome()
        self._check = check
        self._refusal = refusal
        self._redaction = redaction
        self._shape: Chunk = {"id": "", "created": int(time.time()), "model": ""}
        self._overlap = ""
        self._window_index = 0

    async def run(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """The chunks to send, one by one (see ``batches``)."""
        async with contextlib.aclosing(self.batches(chunks)) as batches:
            async for batch in batches:
                for chunk in batch:
                    yield chunk

    async def batches(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[list[Chunk]]:
        """The chunks to send, grouped as released (a whole window at once in ``hold_back``), so
        the caller can write each group in one go. Closing this closes ``chunks`` (the upstream
        connection) too."""
        inner = (
            self._stream_first(chunks) if self.settings.mode == "stream_first" else self._hold_back(chunks)
        )
        try:
            async with contextlib.aclosing(inner):
                async for batch in inner:
                    yield batch
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    # ------------------------------------------------------------------ hold back

    async def _hold_back(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[list[Chunk]]:
        pending: list[Chunk] = []
        pieces: list[str] = []
        tail: list[Chunk] = []
        async for chunk in chunks:
            self._remember(chunk)
            text = chunk_text(chunk)
            (tail if _is_tail(chunk) else pending).append(chunk)
            if text:
                pieces.append(text)
            if len(pieces) >= self.settings.window_tokens and not tail:
                yield await self._release(pending, pieces)
                if self.outcome.blocked:
                    return
                pending, pieces = [], []
        if pieces or pending:
            batch = await self._release(pending, pieces)
            if self.outcome.blocked:
                yield batch
                return
            yield batch + tail
        else:
            yield tail

    async def _release(self, pending: list[Chunk], pieces: list[str]) -> list[Chunk]:
        decision = await self._check_window(pieces) if pieces else None
        action = decision.effective_action if decision else Action.ALLOW
        if action is Action.BLOCK:
            self.outcome.blocked_by = decision
            return [self._block_chunk()]
        if action is Action.REDACT:
            assert decision is not None
            self.outcome.released_pieces += 1
            text = decision.user_message or self._redaction
            return [self._with_content(pending[0] if pending else self._shape, text)]
        self.outcome.released_pieces += len(pieces)
        return pending

    # ------------------------------------------------------------------ stream first

    async def _stream_first(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[list[Chunk]]:
        checks: set[asyncio.Task[Decision]] = set()
        pieces: list[str] = []
        tail: list[Chunk] = []
        iterator = aiter(chunks)
        try:
            while True:
                chunk = await self._next_or_violation(iterator, checks)
                if self.outcome.blocked:
                    yield [self._block_chunk()]
                    return
                if chunk is None:
                    break
                self._remember(chunk)
                text = chunk_text(chunk)
                if text:
                    pieces.append(text)
                if _is_tail(chunk):
                    tail.append(chunk)
                    continue
                self.outcome.released_pieces += 1 if text else 0
                yield [chunk]
                if len(pieces) >= self.settings.window_tokens:
                    checks.add(asyncio.ensure_future(self._check_window(pieces)))
                    pieces = []
            if pieces:
                checks.add(asyncio.ensure_future(self._check_window(pieces)))
            for decision in await asyncio.gather(*checks):
                self._note(decision)
            checks.clear()
            if self.outcome.blocked:
                yield [self._block_chunk()]
                return
            yield tail
        finally:
            for task in checks:
                task.cancel()

    async def _next_or_violation(
        self, iterator: AsyncIterator[Chunk], checks: set[asyncio.Task[Decision]]
    ) -> Chunk | None:
        """The next upstream chunk, unless a running check reports a block first."""
        self._collect(checks)
        if self.outcome.blocked:
            return None
        following = asyncio.ensure_future(anext(iterator, None))
        try:
            while checks:
                done, _ = await asyncio.wait({following, *checks}, return_when=asyncio.FIRST_COMPLETED)
                self._collect(checks)
                if self.outcome.blocked:
                    return None
                if following in done:
                    break
            return await following
        finally:
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following

    def _collect(self, checks: set[asyncio.Task[Decision]]) -> None:
        for task in [t for t in checks if t.done()]:
            checks.discard(task)
            self._note(task.result())  # a failed check raises here: the stream ends with an error

    def _note(self, decision: Decision) -> None:
        if decision.effective_action is Action.BLOCK and self.outcome.blocked_by is None:
            self.outcome.blocked_by = decision

    # ------------------------------------------------------------------ shared

    async def _check_window(self, pieces: list[str]) -> Decision:
        index = self._window_index
        self._window_index += 1
        text = self._overlap + "".join(pieces)
        keep = self.settings.overlap_tokens
        self._overlap = "".join(pieces[-keep:]) if keep > 0 else ""
        decision = await self._check(text, index)
        self.outcome.decisions.append(decision)
        return decision

    def _remember(self, chunk: Chunk) -> None:
        for key in ("id", "created", "model"):
            if chunk.get(key):
                self._shape[key] = chunk[key]

    def _with_content(self, chunk: Chunk, content: str) -> Chunk:
        choice = {"index": 0, "delta": {"content": content}, "finish_reason": None}
        return (
            {**self._base(), "choices": [choice]}
            if chunk is self._shape
            else {**chunk, "choices": [{**chunk["choices"][0], "delta": {"content": content}}]}
        )

    def _block_chunk(self) -> Chunk:
        """The last chunk of a blocked stream; it carries the refusal (the rule's message, else the
        policy's) only when nothing was sent yet, so it never reads as the end of the answer."""
        blocker = self.outcome.blocked_by
        refusal = (blocker.user_message if blocker else None) or self._refusal
        delta = {"content": refusal} if refusal and not self.outcome.released_pieces else {}
        return {**self._base(), "choices": [{"index": 0, "delta": delta, "finish_reason": "content_filter"}]}

    def _base(self) -> Chunk:
        return {
            "id": self._shape["id"],
            "object": "chat.completion.chunk",
            "created": self._shape["created"],
            "model": self._shape["model"],
        }
