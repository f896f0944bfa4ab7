"""One pure ASGI middleware for every HTTP request: request id, body limit, request metrics.

* ``x-request-id``: the client's value is kept when it is short printable text, else a new one is
  made; it is on ``request.state.request_id`` and on every response.
* The body limit is enforced while the body is read (a ``Content-Length`` over the limit is refused
  before reading), as a 413 in OpenAI's error shape.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guard import metrics
from guard.gateway.errors import REQUEST_ID_HEADER, error_payload

_VALID_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
KNOWN_ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/moderations",
        "/v1/models",
        "/v1/guard/check",
        "/v1/guard/audit",
        "/v1/guard/review",
        "/healthz",
        "/readyz",
        "/metrics",
    }
)


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _VALID_ID.match(text):
                return text
    return uuid.uuid4().hex


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        route = scope["path"] if scope["path"] in KNOWN_ROUTES else "other"
        status = {"code": 500}
        id_header = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                # The error mapper sets it too: one header, not "id, id".
                if not any(name.lower() == id_header[0] for name, _ in headers):
                    headers.append(id_header)
                message["headers"] = headers
            await send(message)

        try:
            length = _content_length(scope["headers"])
            if length is not None and length > self.max_body_bytes:
                await self._too_large(send_with_id, length)
                return
            await self.app(scope, self._limited(receive), send_with_id)
        finally:
            metrics.child(metrics.REQUESTS, route, str(status["code"])).inc()
            metrics.child(metrics.REQUEST_SECONDS, route).observe(time.perf_counter() - started)

    def _limited(self, receive: Receive) -> Receive:
        received = 0
        limit = self.max_body_bytes

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised while the body is read: FastAPI and the chat endpoint both hand it to the mapper.
                    raise HTTPException(413, f"request body is over the limit of {limit} bytes")
            return message

        return limited

    async def _too_large(self, send: Send, length: int) -> None:
        body = json.dumps(
            error_payload(
                413,
                f"request body of {length} bytes is over the limit of {self.max_body_bytes} bytes",
                code="payload_too_large",
            )
        ).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
