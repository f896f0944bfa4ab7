from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from guard.gateway.context import RequestContext
from guard.gateway.protocol import ModerationRequest, ModerationResponse
from guard.gateway.routes.deps import ERRORS, context, gateway

router = APIRouter()


@router.post("/v1/moderations", responses=ERRORS)
async def moderations(
    body: ModerationRequest, request: Request, ctx: RequestContext = Depends(context)
) -> ModerationResponse:
    return await gateway(request).moderate(body)
