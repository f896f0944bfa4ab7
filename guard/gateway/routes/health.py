from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from guard import metrics
from guard.gateway.routes.deps import gateway

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Models (or workers) loaded and every configured upstream reachable."""
    ready, report = await gateway(request).readiness()
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", **report}, status_code=200 if ready else 503
    )


@router.get("/metrics")
async def prometheus() -> Response:
    body, content_type = metrics.render_latest()
    return Response(body, media_type=content_type)
