"""The one error mapper: every failure leaves the gateway as OpenAI's error shape.

``{"error": {"message", "type", "param", "code"}}`` with the status the ``GuardError`` subclass
names (400 bad input, 401 key, 404 policy, 409 conflict, 413 body, 422 schema, 502 upstream,
503 unavailable, 504 timeout). Anything unexpected is logged here with its traceback and answered
with a plain 500 that carries the request id, never the traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from guard.errors import BadInput, GuardError, UpstreamError
from guard.gateway.protocol import ErrorInfo, ErrorResponse
from guard.types import Decision

log = logging.getLogger("guard.gateway")

REQUEST_ID_HEADER = "x-request-id"


class Unauthorized(GuardError):
    kind = "invalid_api_key"
    http_status = 401


class Forbidden(GuardError):
    kind = "permission_denied"
    http_status = 403


class PayloadTooLarge(BadInput):
    kind = "payload_too_large"
    http_status = 413


class UpstreamRejected(UpstreamError):
    """The upstream answered with a 4xx: pass its status and message through to the client."""

    kind = "upstream_rejected"

    def __init__(self, message: str, *, status: int, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.http_status = status


class ContentBlocked(BadInput):
    """A block answered as an HTTP 400 (policy ``block_response: error``) instead of a refusal."""

    kind = "content_filter"

    def __init__(self, message: str, *, decision: Decision) -> None:
        super().__init__(message, param="messages")
        self.decision = decision


def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    return "invalid_request_error" if status < 500 else "server_error"


def error_payload(
    status: int,
    message: str,
    *,
    code: str | None,
    param: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    info = ErrorInfo(message=message, type=error_type(status), param=param, code=code, **(extra or {}))
    return ErrorResponse(error=info).model_dump()


def guard_error_response(error: GuardError, request_id: str | None = None) -> JSONResponse:
    status = error.http_status if 400 <= error.http_status < 600 else 500
    extra: dict[str, Any] = {}
    if isinstance(error, ContentBlocked):
        extra["guard"] = {"decision": error.decision.model_dump(mode="json")}
    body = error_payload(status, error.message, code=error.kind, param=error.param, extra=extra)
    return JSONResponse(body, status_code=status, headers=_id_header(request_id))


def _id_header(request_id: str | None) -> dict[str, str]:
    return {REQUEST_ID_HEADER: request_id} if request_id else {}


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    where = f"{param}: " if param else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}{first.get('msg', 'invalid value')}{more}", param


def exception_response(exc: BaseException, request_id: str | None) -> JSONResponse:
    """The answer to any exception a request raised, in OpenAI's error shape: the FastAPI
    handlers below and the chat endpoint (``guard.gateway.routes.chat``) both answer with this."""
    if isinstance(exc, GuardError):
        if exc.http_status >= 500:
            log.warning("request %s failed: %s: %s", request_id, exc.kind, exc.message)
        return guard_error_response(exc, request_id)
    if isinstance(exc, RequestValidationError):
        message, param = _validation_message(exc)
        body = error_payload(422, message, code="invalid_request", param=param)
        return JSONResponse(body, status_code=422, headers=_id_header(request_id))
    if isinstance(exc, StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        body = error_payload(exc.status_code, str(exc.detail), code=code)
        headers = {**(exc.headers or {}), **_id_header(request_id)}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)
    log.error("unexpected error in request %s", request_id, exc_info=exc)
    message = f"internal error (request id {request_id})"
    body = error_payload(500, message, code="internal_error")
    return JSONResponse(body, status_code=500, headers=_id_header(request_id))


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


async def _on_exception(request: Request, exc: Exception) -> JSONResponse:
    return exception_response(exc, _request_id(request))


def install_error_handlers(app: FastAPI) -> None:
    for kind in (GuardError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, _on_exception)
