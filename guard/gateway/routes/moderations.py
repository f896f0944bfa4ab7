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
    """OpenAI's moderation API; ``x-guard-policy`` names the policy whose ``on_error`` decides an
    input the guard fails on (else the key's or tenant's default)."""
    return await gateway(request).moderate(ctx, body, request.headers.get("x-guard-policy"))
