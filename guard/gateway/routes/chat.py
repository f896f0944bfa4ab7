"""``POST /v1/chat/completions``, the hot path: a pure ASGI endpoint.

The app calls ``ChatEndpoint`` before FastAPI's own stack (``GatewayAPI.__call__``): per request
that stack (its middlewares, router, exception middleware, exit stack, and a wrapper around every
``send``) cost about a fifth of the gateway's CPU per stream. The endpoint keeps what matters:
``GatewayMiddleware`` around it (request id, body limit, request metrics), the same pydantic
request model, and the one error mapper (``exception_response``) for every failure before the
answer starts. The FastAPI route below documents the endpoint in the OpenAPI schema and serves the
same code if a request reaches the router anyway.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from guard.gateway.errors import exception_response
from guard.gateway.protocol import ChatCompletionRequest
from guard.gateway.routes.deps import ERRORS, gateway, parse_body, schema_of
from guard.gateway.serving import Gateway
from guard.gateway.sse_response import EventStreamResponse

PATH = "/v1/chat/completions"
router = APIRouter()


@router.post(PATH, responses=ERRORS, openapi_extra=schema_of(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    return await answer(gateway(request), request.scope, await request.body())


class ChatEndpoint:
    """The ASGI app of the route (HTTP only; the caller dispatches ``POST PATH`` here)."""

    def __init__(self, gw: Gateway) -> None:
        self.gateway = gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await answer(self.gateway, scope, await _body(receive))
        except ClientDisconnect:
            return  # gone before its request was read: nobody to answer
        except Exception as exc:  # noqa: BLE001 - every failure is answered by the one mapper
            response = exception_response(exc, scope.get("state", {}).get("request_id"))
        await response(scope, receive, send)


async def answer(gw: Gateway, scope: Scope, raw: bytes) -> Response:
    """Auth first, then the body; a chat stream or a JSON answer."""
    authorization = policy = None
    for name, value in scope["headers"]:
        if name == b"authorization" and authorization is None:  # the first, as Starlette's headers
            authorization = value.decode("latin-1")
        elif name == b"x-guard-policy" and policy is None:
            policy = value.decode("latin-1")
    client = scope.get("client")
    caller = gw.auth.authenticate(authorization, client[0] if client else None)
    ctx = gw.context_for(caller, scope.get("state", {}).get("request_id"), scope["path"])
    body = parse_body(raw, ChatCompletionRequest)
    reply = await gw.chat.create(ctx, gw.policies, body, policy)
    if reply.stream is not None:
        headers = {**reply.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return EventStreamResponse(reply.stream, headers=headers)
    return JSONResponse(reply.payload, headers=reply.headers)


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
