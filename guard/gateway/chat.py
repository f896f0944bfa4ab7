"""The chat-completions data path, one way: messages -> policy -> input checks -> upstream ->
output checks (whole answer, or stream windows) -> response. Every decision is audited before the
text it covers is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from guard import metrics
from guard.errors import BadInput, GuardError
from guard.gateway.context import RequestContext, resolve_policy, upstream_route
from guard.gateway.errors import ContentBlocked, error_payload
from guard.gateway.limits import check_messages
from guard.gateway.pipeline import Checked, Guardrail, observe_decision
from guard.gateway.protocol import ChatChoice, ChatCompletion, ChatCompletionRequest, ChatMessageOut
from guard.gateway.sse_client import ReadHint
from guard.gateway.streaming import GuardedStream, StreamSettings
from guard.gateway.upstream import UpstreamClient, UpstreamPool
from guard.messages import parse_messages
from guard.policy import Policy, PolicySet
from guard.settings import GuardSettings
from guard.types import Action, Decision, Message

REDACTED = "[redacted]"
Chunk = dict[str, Any]


@dataclass
class ChatReply:
    """A JSON answer or an SSE byte stream, with the guard headers."""

    headers: dict[str, str]
    payload: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None


@dataclass
class _Call:
    ctx: RequestContext
    policy: Policy
    body: dict[str, Any]
    messages: list[Message]
    client: UpstreamClient
    checks: list[Checked] = field(default_factory=list)

    @property
    def check_ms(self) -> float:
        return sum(c.check_ms for c in self.checks)


class ChatService:
    def __init__(self, guardrail: Guardrail, upstreams: UpstreamPool, settings: GuardSettings) -> None:
        self.guardrail = guardrail
        self.upstreams = upstreams
        self.settings = settings

    async def create(
        self,
        ctx: RequestContext,
        policies: PolicySet,
        request: ChatCompletionRequest,
        requested_policy: str | None,
    ) -> ChatReply:
        body = request.model_dump(exclude_unset=True)
        if int(body.get("n") or 1) != 1:
            raise BadInput("n > 1 is not supported through the guard", param="n")
        messages = parse_messages(request.messages)
        check_messages(
            messages, max_messages=self.settings.max_messages, max_chars=self.settings.max_message_chars
        )
        policy = resolve_policy(policies, ctx, requested_policy)
        client = self.upstreams.client(upstream_route(ctx, request.model))
        call = _Call(ctx, policy, body, messages, client)
        if request.stream:
            return await self._stream(call)
        return await self._complete(call)

    # ------------------------------------------------------------------ input

    async def _input(self, call: _Call, start: Awaitable[Any] | None) -> tuple[Checked, Any]:
        """Input checks, with the upstream call already running beside them when the policy asks
        (``upstream_parallel``); the early call is cancelled when the input is blocked or redacted.
        The input record is written while the upstream call starts: the caller awaits
        ``checked.audited()`` before it answers anything."""
        early = asyncio.ensure_future(start) if start is not None else None
        try:
            checked = await self.guardrail.check(
                call.ctx, call.policy, call.messages, "input", defer_audit=True
            )
        except BaseException:
            await _discard(early)
            raise
        call.checks.append(checked)
        if checked.action in (Action.BLOCK, Action.REDACT):
            await _discard(early)
            early = None
        if checked.action is Action.BLOCK:
            await checked.audited()
        if checked.action is Action.REDACT:
            call.body = {**call.body, "messages": _redact_messages(call.body["messages"], checked.decision)}
        return checked, early

    # ------------------------------------------------------------------ non-streaming

    async def _complete(self, call: _Call) -> ChatReply:
        start = call.client.chat(call.body) if call.policy.upstream_parallel else None
        checked, early = await self._input(call, start)
        if checked.action is Action.BLOCK:
            return self._blocked_json(call, checked.decision)
        answer, _ = await _together(
            _timed(early if early is not None else call.client.chat(call.body)), checked.audited()
        )
        text = _answer_text(answer)
        output = await self.guardrail.check(
            call.ctx,
            call.policy,
            [*call.messages, Message(role="assistant", content=text)],
            "output",
            content=text,
        )
        call.checks.append(output)
        if output.action is Action.BLOCK:
            return self._blocked_json(call, output.decision, like=answer)
        if output.action is Action.REDACT:
            answer = _with_content(answer, output.decision.user_message or REDACTED)
        return ChatReply(headers=self._headers(call), payload=answer)

    def _blocked_json(self, call: _Call, decision: Decision, like: dict[str, Any] | None = None) -> ChatReply:
        text = decision.user_message or call.policy.refusal
        if call.policy.block_response == "error":
            raise ContentBlocked(text, decision=decision)
        refusal = ChatCompletion(
            model=str(call.body.get("model", "")),
            choices=[ChatChoice(message=ChatMessageOut(content=text), finish_reason="content_filter")],
        )
        payload = refusal.model_dump()
        if like is not None:
            payload.update({k: like[k] for k in ("id", "created", "model", "usage") if k in like})
        return ChatReply(headers=self._headers(call), payload=payload)

    # ------------------------------------------------------------------ streaming

    async def _stream(self, call: _Call) -> ChatReply:
        hint = ReadHint()  # the guarded stream tells the upstream reader when it needs waking
        start = _open_stream(call.client, call.body, hint) if call.policy.upstream_parallel else None
        checked, early = await self._input(call, start)
        headers = self._headers(call)
        if checked.action is Action.BLOCK:
            if call.policy.block_response == "error":
                raise ContentBlocked(
                    checked.decision.user_message or call.policy.refusal, decision=checked.decision
                )
            text = checked.decision.user_message or call.policy.refusal
            return ChatReply(headers=headers, stream=_sse(_refusal_chunks(call.body, text), finished=_yes))
        # The input record is awaited before the first byte of content, not before the stream
        # opens: its write overlaps the upstream's first tokens.
        groups = await _recorded_first(
            early if early is not None else _open_stream(call.client, call.body, hint), checked
        )
        if not call.policy.guards.llama_guard.applies("output"):
            return ChatReply(headers=headers, stream=_sse(groups, before=checked.audited))
        guarded = GuardedStream(
            stream_settings(call.policy),
            self._window_check(call),
            refusal=call.policy.refusal,
            redaction=REDACTED,
            hint=hint,
        )
        on_end = lambda: _observe_stream(call, guarded)  # noqa: E731
        return ChatReply(
            headers=headers,
            stream=_sse(
                guarded.batches(groups), on_end, before=checked.audited, finished=lambda: guarded.finished
            ),
        )

    def _window_check(self, call: _Call):  # noqa: ANN202 - a WindowCheck
        async def check(text: str, index: int) -> Decision:
            checked = await self.guardrail.check(
                call.ctx,
                call.policy,
                [*call.messages, Message(role="assistant", content=text)],
                "output",
                content=text,
                audit_direction="stream_window",
                window_index=index,
                observe=False,
            )
            return checked.decision

        return check

    def _headers(self, call: _Call) -> dict[str, str]:
        decisions = [c.decision for c in call.checks]
        effective = Action.most_severe([d.effective_action for d in decisions])
        headers = {
            "x-guard-decision": effective.value,
            "x-guard-policy": f"{call.policy.id}@{call.policy.version}",
            "x-guard-check-ms": f"{call.check_ms:.1f}",
        }
        if call.policy.shadow:
            headers["x-guard-shadow-decision"] = Action.most_severe([d.action for d in decisions]).value
        return headers


_STREAM_SETTINGS: dict[str, StreamSettings] = {}


def stream_settings(policy: Policy) -> StreamSettings:
    """Cached per policy content (a reloaded policy has a new hash).

    ``hold_back`` when any category the policy enforces on output (block or redact) is held
    back; else ``stream_first`` (nothing is enforced, or every enforced category streams first)."""
    cached = _STREAM_SETTINGS.get(policy.content_hash)
    if cached is None:
        if len(_STREAM_SETTINGS) > 256:
            _STREAM_SETTINGS.clear()
        cached = _STREAM_SETTINGS[policy.content_hash] = _stream_settings(policy)
    return cached


def _stream_settings(policy: Policy) -> StreamSettings:
    enforced = [
        code
        for code in sorted(policy.known_codes)
        if (rule := policy.rule(code, "output")) and rule.action in (Action.BLOCK, Action.REDACT)
    ]
    held = not policy.shadow and any(policy.streaming.mode_for(code) == "hold_back" for code in enforced)
    return StreamSettings(
        mode="hold_back" if held else "stream_first",
        window_tokens=policy.streaming.window_tokens,
        overlap_tokens=policy.streaming.overlap_tokens,
    )


# --------------------------------------------------------------------------- helpers


async def _timed(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    outcome = "error"
    try:
        answer = await call
        outcome = "ok"
        return answer
    finally:
        metrics.child(metrics.UPSTREAM_SECONDS, outcome).observe(time.perf_counter() - started)


async def _together(work: Awaitable[Any], audited: Awaitable[None]) -> tuple[Any, None]:
    """Await the upstream call and the input record together. A failing upstream call is raised
    only once the record is durable (an error answer leaves after its record, like any answer; a
    failing write then wins: fail closed); a failing write cancels the call (closing an opened
    stream)."""
    tasks = [asyncio.ensure_future(work), asyncio.ensure_future(audited)]
    try:
        await asyncio.gather(*tasks)
    except BaseException as exc:
        await _discard(tasks[0])
        if isinstance(exc, Exception) and not tasks[1].done():
            await tasks[1]
        tasks[1].cancel()
        raise
    return tasks[0].result(), None


async def _recorded_first(work: Awaitable[Any], checked: Checked) -> Any:
    """``work`` (opening the upstream stream); if it fails, the error is raised only once the input
    record is durable, as in ``_together``."""
    try:
        return await work
    except Exception:
        await checked.audited()
        raise


async def _discard(task: asyncio.Future[Any] | None) -> None:
    """Cancel an early upstream call; close its stream if it had already opened."""
    if task is None:
        return
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        result = await task
        if hasattr(result, "aclose"):
            await result.aclose()


async def _open_stream(client: UpstreamClient, body: dict[str, Any], hint: ReadHint) -> _UpstreamStream:
    """Open the upstream stream and read its first chunks, so that a failing upstream is an HTTP
    error (502/504/4xx) rather than a broken stream."""
    started = time.perf_counter()
    source = client.stream_chat(body, hint)
    try:
        first = await anext(source, None)
    except BaseException:
        await source.aclose()
        metrics.child(metrics.UPSTREAM_SECONDS, "error").observe(time.perf_counter() - started)
        raise
    return _UpstreamStream(source, first, started)


class _UpstreamStream:
    """The upstream's chunks in groups (as they arrived), the first group prefetched; ``aclose``
    closes the connection even when iteration never started (a stream opened early for an input
    that was then blocked)."""

    def __init__(self, source: AsyncIterator[list[Chunk]], first: list[Chunk] | None, started: float) -> None:
        self._source = source
        self._first = first
        self._started = started
        self._ended = first is None
        self._closed = False

    def __aiter__(self) -> _UpstreamStream:
        return self

    async def __anext__(self) -> list[Chunk]:
        if self._first is not None:
            group, self._first = self._first, None
            return group
        if self._ended:
            raise StopAsyncIteration
        try:
            return await anext(self._source)
        except StopAsyncIteration:
            self._ended = True
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._source.aclose()  # type: ignore[attr-defined]
        outcome = "ok" if self._ended else "closed"
        metrics.child(metrics.UPSTREAM_SECONDS, outcome).observe(time.perf_counter() - self._started)


def _refusal_chunks(body: dict[str, Any], text: str) -> AsyncIterator[list[Chunk]]:
    completion = ChatCompletion(model=str(body.get("model", "")), choices=[])

    async def chunks() -> AsyncIterator[list[Chunk]]:
        base = {
            "id": completion.id,
            "object": "chat.completion.chunk",
            "created": completion.created,
            "model": completion.model,
        }
        yield [
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
                ],
            },
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]},
        ]

    return chunks()


_DONE = b"data: [DONE]\n\n"


def _yes() -> bool:
    return True


def _encode(chunk: Chunk) -> bytes:
    """One SSE event; an upstream chunk that passes unchanged goes out as the bytes it came as."""
    raw = getattr(chunk, "raw", None)
    return (
        b"data: " + (raw if raw is not None else json.dumps(chunk, separators=(",", ":")).encode()) + b"\n\n"
    )


async def _sse(
    groups: AsyncIterator[list[Chunk]],
    on_end: Callable[[], None] | None = None,
    before: Callable[[], Awaitable[None]] | None = None,
    finished: Callable[[], bool] | None = None,
) -> AsyncIterator[bytes]:
    """Server-sent events, one write per group of chunks released together; ``before`` is awaited
    before the first content goes out; when ``finished()`` says a group is the last one, the end
    marker goes out with it (one write fewer). A failure mid-stream ends the stream with an
    OpenAI-shaped error event."""
    done_sent = False
    try:
        async with contextlib.aclosing(groups):  # type: ignore[type-var]
            async for group in groups:
                if before is not None:
                    await before()
                    before = None
                data = b"".join([_encode(c) for c in group])
                if finished is not None and finished():
                    done_sent = True
                    yield data + _DONE
                elif data:
                    yield data
            if before is not None:
                await before()
        if not done_sent:
            yield _DONE
    except GuardError as error:
        payload = error_payload(error.http_status, error.message, code=error.kind, param=error.param)
        yield b"data: " + json.dumps(payload).encode() + b"\n\n"
    finally:
        if on_end is not None:
            on_end()


def _observe_stream(call: _Call, guarded: GuardedStream) -> None:
    decisions = guarded.outcome.decisions
    if not decisions:
        return
    worst = max(decisions, key=lambda d: d.action.severity)
    observe_decision(call.ctx, "output", worst)


def _answer_text(answer: dict[str, Any]) -> str:
    message = (answer.get("choices") or [{}])[0].get("message") or {}
    text = message.get("content") or ""
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        text += f"\n{fn.get('name', '')}({fn.get('arguments', '')})"
    return text


def _with_content(answer: dict[str, Any], content: str) -> dict[str, Any]:
    choice = answer["choices"][0]
    message = {**(choice.get("message") or {}), "content": content}
    message.pop("tool_calls", None)
    return {**answer, "choices": [{**choice, "message": message}, *answer["choices"][1:]]}


def _redact_messages(raw: list[Any], decision: Decision) -> list[Any]:
    """Replace the messages the decision names (or the last user message, for reasons that name
    none) with the redaction text, keeping every other field of each message."""
    text = decision.user_message or REDACTED
    indices = {
        r.message_index for r in decision.reasons if r.action is Action.REDACT and r.message_index is not None
    }
    if any(r.action is Action.REDACT and r.message_index is None for r in decision.reasons):
        users = [i for i, m in enumerate(raw) if isinstance(m, dict) and m.get("role") == "user"]
        indices.update(users[-1:])
    return [{**m, "content": text} if i in indices and isinstance(m, dict) else m for i, m in enumerate(raw)]
