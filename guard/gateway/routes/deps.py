"""Dependencies shared by the routers: the gateway object and the authenticated caller."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from guard.gateway.auth import Principal
from guard.gateway.context import RequestContext
from guard.gateway.protocol import ErrorResponse
from guard.gateway.serving import Gateway

M = TypeVar("M", bound=BaseModel)


def gateway(request: Request) -> Gateway:  # plain function: called by the routes
    return request.app.state.gateway


async def principal(request: Request) -> Principal:
    # async: FastAPI would run a plain function on its thread pool
    return gateway(request).principal(request)


async def context(request: Request, caller: Principal = Depends(principal)) -> RequestContext:
    return gateway(request).context(request, caller)


def parse_body(raw: bytes, model: type[M]) -> M:
    """The JSON body as ``model``, for hot routes that skip FastAPI's body injection (measurably
    cheaper per request); errors go to the same mapper (invalid JSON or fields -> 422)."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RequestValidationError(
            [{"loc": ("body",), "msg": f"invalid JSON: {exc}", "type": "json_invalid"}]
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body for a route that reads its body with ``parse_body``."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


# Error statuses a route may answer with, for the OpenAPI schema.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 502, 503, 504)
}
