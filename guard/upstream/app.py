"""FastAPI app serving a ``ChatEngine`` behind OpenAI's chat-completions API, streaming included.

Generation runs in a worker thread; its text pieces cross to the event loop through an asyncio
queue. When a streaming client goes away, the thread is told to stop at the next token.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field

from guard.gateway.errors import install_error_handlers
from guard.gateway.protocol import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageOut,
    ModelCard,
    ModelList,
    Usage,
)
from guard.messages import parse_messages
from guard.upstream.engine import ChatEngine, Generation, GenerationParams

_END = object()


class UpstreamChatRequest(ChatCompletionRequest):
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)

    def params(self, default_max_tokens: int) -> GenerationParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenerationParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=self.temperature or 0.0,
            top_p=self.top_p or 1.0,
            seed=self.seed,
            stop=stop,
        )


def create_upstream_app(engine: ChatEngine, *, default_max_tokens: int = 128) -> FastAPI:
    app = FastAPI(title="guard upstream", docs_url=None, redoc_url=None)
    install_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "model": engine.name}

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=engine.name, owned_by="local")])

    @app.post("/v1/chat/completions")
    async def chat(body: UpstreamChatRequest, request: Request) -> Any:
        messages = parse_messages(body.messages)
        params = body.params(default_max_tokens)
        if body.stream:
            return StreamingResponse(
                _stream(engine, messages, params, request), media_type="text/event-stream"
            )
        generation = await asyncio.to_thread(engine.generate, messages, params)
        return JSONResponse(_completion(engine.name, generation).model_dump(exclude_none=True))

    return app


def _completion(model: str, generation: Generation) -> ChatCompletion:
    usage = Usage(
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        total_tokens=generation.prompt_tokens + generation.completion_tokens,
    )
    choice = ChatChoice(
        message=ChatMessageOut(content=generation.text), finish_reason=generation.finish_reason
    )
    return ChatCompletion(model=model, choices=[choice], usage=usage)


async def _stream(
    engine: ChatEngine, messages: Any, params: GenerationParams, request: Request
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancelled = threading.Event()

    def run() -> Generation:
        try:
            return engine.generate(
                messages, params, lambda t: loop.call_soon_threadsafe(queue.put_nowait, t), cancelled
            )
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    worker = loop.run_in_executor(None, run)
    chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        chunk = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": engine.name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(chunk)}\n\n"

    stops = _StopWatch(params.stop)
    try:
        yield event({"role": "assistant", "content": ""})
        while (piece := await queue.get()) is not _END:
            text = stops.feed(piece)
            if text:
                yield event({"content": text})
            if stops.hit:
                cancelled.set()
        rest = stops.flush()
        if rest:
            yield event({"content": rest})
        generation = await worker
        yield event({}, "stop" if stops.hit else generation.finish_reason)
        yield "data: [DONE]\n\n"
    finally:
        cancelled.set()


class _StopWatch:
    """Streams text but holds back what could still become a stop string; cuts at the first stop."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = stops
        self._keep = max((len(s) for s in stops), default=1) - 1
        self._buffer = ""
        self.hit = False

    def feed(self, piece: str) -> str:
        if self.hit:
            return ""
        self._buffer += piece
        cut = min((i for s in self._stops if (i := self._buffer.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            out, self._buffer = self._buffer[:cut], ""
            return out
        safe = len(self._buffer) - self._keep
        out, self._buffer = self._buffer[:safe], self._buffer[safe:]
        return out

    def flush(self) -> str:
        out, self._buffer = ("" if self.hit else self._buffer), ""
        return out
