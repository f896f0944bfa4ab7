"""Guarded streaming: the upstream's chunks are checked in windows of N pieces with overlap.

* ``hold_back``: a window is released only after its check passed (and was audited), so no
  unscanned text ever reaches the client; a blocked window is never sent.
* ``stream_first``: chunks are released at once and windows are checked beside the stream; the
  stream stops at the first violation the checks report.

Either way a blocked stream ends with one chunk whose ``finish_reason`` is ``content_filter``; the
caller then writes ``[DONE]``. A "piece" is one upstream chunk's text (OpenAI-compatible servers
send about one token per chunk). The upstream's own finishing chunk is held until the last window
passed, so a violation at the very end still ends the stream as ``content_filter``.

The input is the upstream's chunks in groups (those that arrived together); unchanged chunks are
passed on as the same objects, so the caller can forward the upstream's bytes as they came.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from guard.gateway.sse_client import ReadHint
from guard.types import Action, Decision

StreamMode = Literal["hold_back", "stream_first"]
_UNTIL_THE_END = 1 << 30  # a read hint: nothing to do before the upstream's stream ends
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


def piece_of(chunk: Chunk) -> tuple[str, bool]:
    """The text a chunk adds to the answer (content plus any tool-call argument fragments), and
    whether it is a tail chunk (the finishing one, with ``finish_reason`` set, or a usage-only
    chunk without choices): those are held to the end."""
    choices = chunk.get("choices")
    if not choices:
        return "", True
    choice = choices[0]
    delta = choice.get("delta")
    text = (delta.get("content") or "") if delta else ""
    if delta and delta.get("tool_calls"):
        for call in delta["tool_calls"]:
            fn = call.get("function") or {}
            text += (fn.get("name") or "") + (fn.get("arguments") or "")
    return text, choice.get("finish_reason") is not None


async def _one_by_one(chunks: AsyncIterator[Chunk]) -> AsyncIterator[list[Chunk]]:
    try:
        async for chunk in chunks:
            yield [chunk]
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


class GuardedStream:
    def __init__(
        self,
        settings: StreamSettings,
        check: WindowCheck,
        *,
        refusal: str | None,
        redaction: str,
        hint: ReadHint | None = None,
    ) -> None:
        """``hint``: the upstream reader's, told how many more chunks ``hold_back`` can take before
        it has a window to check (so it is not woken for every token)."""
        self.settings = settings
        self._hint = hint
        self.outcome = StreamOutcome()
        # True once the group being yielded is the last one (the caller appends its end marker).
        self.finished = False
        self._check = check
        self._refusal = refusal
        self._redaction = redaction
        self._created = int(time.time())
        self._first: Chunk | None = None  # the first and latest chunks seen: id, created, model
        self._latest: Chunk | None = None
        self._overlap = ""
        self._window_index = 0

    async def run(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """The chunks to send, one by one, from single chunks (see ``batches``)."""
        async with contextlib.aclosing(self.batches(_one_by_one(chunks))) as batches:
            async for batch in batches:
                for chunk in batch:
                    yield chunk

    async def batches(self, groups: AsyncIterator[list[Chunk]]) -> AsyncIterator[list[Chunk]]:
        """The chunks to send, grouped as released (a whole window at once in ``hold_back``), so
        the caller can write each group in one go; ``groups`` are the upstream's chunks as they
        arrived together. Closing this closes ``groups`` (the upstream connection) too."""
        inner = (
            self._stream_first(groups) if self.settings.mode == "stream_first" else self._hold_back(groups)
        )
        try:
            async with contextlib.aclosing(inner):
                async for batch in inner:
                    yield batch
        finally:
            close = getattr(groups, "aclose", None)
            if close is not None:
                await close()

    # ------------------------------------------------------------------ hold back

    async def _hold_back(self, groups: AsyncIterator[list[Chunk]]) -> AsyncIterator[list[Chunk]]:
        pending: list[Chunk] = []
        pieces: list[str] = []
        tail: list[Chunk] = []
        window = self.settings.window_tokens
        hint = self._hint
        async for group in groups:
            self._remember(group)
            for chunk in group:
                text, is_tail = piece_of(chunk)
                (tail if is_tail else pending).append(chunk)
                if text:
                    pieces.append(text)
                    if len(pieces) >= window and not tail:
                        batch = await self._release(pending, pieces)
                        self.finished = self.outcome.blocked
                        yield batch
                        if self.outcome.blocked:
                            return
                        pending, pieces = [], []
            if hint is not None:  # a chunk adds one piece at most; after the tail, only the end
                hint.events = _UNTIL_THE_END if tail else window - len(pieces)
        self.finished = True
        if pieces or pending:
            batch = await self._release(pending, pieces)
            yield batch if self.outcome.blocked else batch + tail
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
            return [self._with_content(pending[0] if pending else None, text)]
        self.outcome.released_pieces += len(pieces)
        return pending

    # ------------------------------------------------------------------ stream first

    async def _stream_first(self, groups: AsyncIterator[list[Chunk]]) -> AsyncIterator[list[Chunk]]:
        checks: set[asyncio.Task[Decision]] = set()
        pieces: list[str] = []
        tail: list[Chunk] = []
        window = self.settings.window_tokens
        iterator = aiter(groups)
        try:
            while True:
                group = await self._next_or_violation(iterator, checks)
                if self.outcome.blocked:
                    self.finished = True
                    yield [self._block_chunk()]
                    return
                if group is None:
                    break
                self._remember(group)
                out: list[Chunk] = []
                for chunk in group:
                    text, is_tail = piece_of(chunk)
                    if text:
                        pieces.append(text)  # a tail's text too: the last window judges it
                    if is_tail:
                        tail.append(chunk)
                        continue
                    out.append(chunk)
                    if text:
                        self.outcome.released_pieces += 1
                        if len(pieces) >= window:
                            checks.add(asyncio.ensure_future(self._check_window(pieces)))
                            pieces = []
                if out:
                    yield out
            if pieces:
                checks.add(asyncio.ensure_future(self._check_window(pieces)))
            for decision in await asyncio.gather(*checks):
                self._note(decision)
            checks.clear()
            self.finished = True
            yield [self._block_chunk()] if self.outcome.blocked else tail
        finally:
            for task in checks:
                task.cancel()

    async def _next_or_violation(
        self, iterator: AsyncIterator[list[Chunk]], checks: set[asyncio.Task[Decision]]
    ) -> list[Chunk] | None:
        """The next group of upstream chunks, unless a running check reports a block first."""
        self._collect(checks)
        if self.outcome.blocked:
            return None
        if not checks:  # nothing to race against: no task per group
            return await anext(iterator, None)
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

    def _remember(self, group: list[Chunk]) -> None:
        if self._first is None:
            self._first = group[0]
        self._latest = group[-1]

    def _shape(self, key: str, default: Any) -> Any:
        """``id``, ``created`` or ``model`` of the upstream's chunks, for the chunks made here."""
        for chunk in (self._latest, self._first):
            if chunk is not None and chunk.get(key):
                return chunk[key]
        return default

    def _with_content(self, chunk: Chunk | None, content: str) -> Chunk:
        choice = {"index": 0, "delta": {"content": content}, "finish_reason": None}
        return (
            {**self._base(), "choices": [choice]}
            if chunk is None
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
            "id": self._shape("id", ""),
            "object": "chat.completion.chunk",
            "created": self._shape("created", self._created),
            "model": self._shape("model", ""),
        }
