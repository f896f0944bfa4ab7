from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from guard.gateway.context import RequestContext
from guard.gateway.protocol import ModelList
from guard.gateway.routes.deps import ERRORS, context, gateway

router = APIRouter()


@router.get("/v1/models", responses=ERRORS)
async def list_models(request: Request, ctx: RequestContext = Depends(context)) -> ModelList:
    return await gateway(request).models(ctx)
