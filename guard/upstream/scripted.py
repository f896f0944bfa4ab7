"""A scripted OpenAI-compatible chat server: deterministic answers for tests and benchmarks.

The last user message steers it with directives (anything else is echoed back as the answer):

* ``[[words:N]]``        answer N benign words (``w0 w1 ...``), one stream chunk each;
* ``[[unsafe_at:K:N]]``  the same, but word K is the made-up hazard word ``zorblax``;
* ``[[say:NAME]]``       answer one of ``SCRIPTS`` (e.g. ``unsafe`` mentions zorblax);
* ``[[delay_ms:D]]``     wait D ms before each stream chunk (and once before a full answer);
* ``[[sleep_s:S]]``      wait S seconds before answering at all (timeouts);
* ``[[status:C]]``       answer with HTTP status C and an OpenAI-shaped error.

Every answer is a real HTTP response over a real socket: it is a stand-in for vLLM or OpenAI whose
output a test can predict, not a mock object.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

HAZARD_WORD = "zorblax"
SCRIPTS = {
    "unsafe": ["Sure.", " Here", " is", " how", " to", " make", " " + HAZARD_WORD, " at", " home."],
    "hello": ["Hello!", " How", " can", " I", " help?"],
}
MODEL = "scripted"
# Streams being sent right now (GET /debug/streams): tests see a closed client reach the upstream.
ACTIVE_STREAMS = [0]
_DIRECTIVE = re.compile(r"\[\[(\w+)(?::([^\]]*))?\]\]")


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


def _answer(text: str, directives: dict[str, str]) -> list[str]:
    if "words" in directives:
        return [f"{' ' if i else ''}w{i}" for i in range(int(directives["words"]))]
    if "unsafe_at" in directives:
        at, count = (int(x) for x in directives["unsafe_at"].split(":"))
        return [(" " if i else "") + (HAZARD_WORD if i == at else f"w{i}") for i in range(count)]
    if "say" in directives:
        return list(SCRIPTS[directives["say"]])
    words = text.split(" ")
    return ["Echo:"] + [" " + w for w in words if w]


def _error(status: int) -> JSONResponse:
    body = {
        "error": {
            "message": f"scripted failure {status}",
            "type": "server_error" if status >= 500 else "invalid_request_error",
            "param": None,
            "code": f"scripted_{status}",
        }
    }
    return JSONResponse(body, status_code=status)


async def chat(request: Request) -> Response:
    body = await request.json()
    text = _last_user_text(body)
    directives = {m.group(1): m.group(2) or "" for m in _DIRECTIVE.finditer(text)}
    if "sleep_s" in directives:
        await asyncio.sleep(float(directives["sleep_s"]))
    if "status" in directives:
        return _error(int(directives["status"]))
    pieces = _answer(_DIRECTIVE.sub("", text).strip(), directives)
    delay = float(directives.get("delay_ms", 0)) / 1000
    model = body.get("model") or MODEL
    if body.get("stream"):
        return StreamingResponse(_stream(pieces, delay, model), media_type="text/event-stream")
    if delay:
        await asyncio.sleep(delay)
    content = "".join(pieces)
    return JSONResponse(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": len(text.split()),
                "completion_tokens": len(pieces),
                "total_tokens": len(text.split()) + len(pieces),
            },
        }
    )


async def _stream(pieces: list[str], delay: float, model: str) -> AsyncIterator[str]:
    chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        return (
            "data: "
            + json.dumps(
                {
                    "id": chunk_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )
            + "\n\n"
        )

    ACTIVE_STREAMS[0] += 1
    try:
        yield event({"role": "assistant", "content": ""})
        for piece in pieces:
            if delay:
                await asyncio.sleep(delay)
            yield event({"content": piece})
        yield event({}, "stop")
        yield "data: [DONE]\n\n"

    finally:
        ACTIVE_STREAMS[0] -= 1


async def models(request: Request) -> JSONResponse:
    return JSONResponse(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "scripted"}]}
    )


async def active_streams(request: Request) -> JSONResponse:
    return JSONResponse({"active": ACTIVE_STREAMS[0]})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_scripted_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/debug/streams", active_streams, methods=["GET"]),
        ]
    )
