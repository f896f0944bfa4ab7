from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from guard.gateway.context import RequestContext
from guard.gateway.protocol import ChatCompletionRequest
from guard.gateway.routes.deps import ERRORS, context, gateway

router = APIRouter()


@router.post("/v1/chat/completions", responses=ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           ctx: RequestContext = Depends(context),
                           x_guard_policy: str | None = Header(default=None)) -> Response:
    gw = gateway(request)
    reply = await gw.chat.create(ctx, gw.policies, body, x_guard_policy)
    if reply.stream is not None:
        headers = {**reply.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return StreamingResponse(reply.stream, media_type="text/event-stream", headers=headers)
    return JSONResponse(reply.payload, headers=reply.headers)
