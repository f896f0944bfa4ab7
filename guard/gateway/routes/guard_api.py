"""The native API: ``/v1/guard/check`` for everyone, the audit log and review queue for admin keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from guard.audit import AuditFilters
from guard.gateway.auth import Principal
from guard.gateway.context import RequestContext
from guard.gateway.protocol import ErrorResponse, GuardCheckRequest, GuardCheckResponse
from guard.gateway.routes.deps import ERRORS, context, gateway, principal
from guard.types import Action, AuditDirection

router = APIRouter()


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["confirm", "overturn"]
    note: str = ""


@router.post("/v1/guard/check", responses=ERRORS)
async def guard_check(
    body: GuardCheckRequest, request: Request, ctx: RequestContext = Depends(context)
) -> GuardCheckResponse:
    return await gateway(request).check(ctx, body)


@router.get("/v1/guard/audit", responses=ERRORS)
async def audit_records(
    request: Request,
    caller: Principal = Depends(principal),
    action: Action | None = None,
    category: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id: str | None = None,
    direction: AuditDirection | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    filters = AuditFilters(
        action=action,
        category=category,
        since=since,
        until=until,
        request_id=request_id,
        direction=direction,
        limit=limit,
    )
    records = await gateway(request).audit_query(caller, filters)
    return {"object": "list", "data": [r.model_dump(mode="json") for r in records]}


@router.get("/v1/guard/review", responses=ERRORS)
async def review_queue(
    request: Request, caller: Principal = Depends(principal), limit: int = Query(default=100, ge=1, le=1000)
) -> dict[str, Any]:
    records = await gateway(request).review_queue(caller, limit)
    return {"object": "list", "data": [r.model_dump(mode="json") for r in records]}


@router.post("/v1/guard/review/{record_id}", responses={**ERRORS, 409: {"model": ErrorResponse}})
async def review(
    record_id: str, body: ReviewRequest, request: Request, caller: Principal = Depends(principal)
) -> dict[str, Any]:
    """A verdict on an open escalation: 409 ``conflict`` when it has one (one verdict per item)."""
    record = await gateway(request).review(caller, record_id, body.verdict, body.note)
    return record.model_dump(mode="json")
