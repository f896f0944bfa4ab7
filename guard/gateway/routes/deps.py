"""Dependencies shared by the routers: the gateway object and the authenticated caller."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request

from guard.gateway.auth import Principal
from guard.gateway.context import RequestContext
from guard.gateway.protocol import ErrorResponse
from guard.gateway.serving import Gateway


def gateway(request: Request) -> Gateway:  # plain function: called by the routes
    return request.app.state.gateway


async def principal(request: Request) -> Principal:
    # async: FastAPI would run a plain function on its thread pool
    return gateway(request).principal(request)


async def context(request: Request, caller: Principal = Depends(principal)) -> RequestContext:
    return gateway(request).context(request, caller)


# Error statuses a route may answer with, for the OpenAPI schema.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 502, 503, 504)
}
