from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from guard.gateway.protocol import ChatCompletionRequest
from guard.gateway.routes.deps import ERRORS, gateway, read_body, schema_of
from guard.gateway.sse_response import EventStreamResponse

router = APIRouter()


@router.post("/v1/chat/completions", responses=ERRORS, openapi_extra=schema_of(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    """The hot path: auth first, then the body (no dependency injection: it costs per request)."""
    gw = gateway(request)
    ctx = gw.context(request, gw.principal(request))
    body = await read_body(request, ChatCompletionRequest)
    reply = await gw.chat.create(ctx, gw.policies, body, request.headers.get("x-guard-policy"))
    if reply.stream is not None:
        headers = {**reply.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return EventStreamResponse(reply.stream, headers=headers)
    return JSONResponse(reply.payload, headers=reply.headers)
