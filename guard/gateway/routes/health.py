"""Probes and metrics. ``/healthz`` and ``/readyz`` answer anyone (orchestrators probe without
keys), with the status alone; callers allowed to see the service's own state
(``Principal.operator_scope``: an admin key for its tenant's share, a local open-mode caller for
all) also get ``/readyz``'s details, and ``/metrics``. Prometheus without a key scrapes the metrics
listener instead (``GUARD_METRICS_PORT``, on an address of its own)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from guard import metrics
from guard.gateway.errors import Forbidden, Unauthorized
from guard.gateway.routes.deps import gateway

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Models (or workers) loaded and every configured upstream reachable."""
    try:
        allowed, tenant = gateway(request).principal(request).operator_scope
    except Unauthorized:  # a probe with a stale key still gets the status
        allowed, tenant = False, None
    ready, report = await gateway(request).readiness(detail=allowed, tenant=tenant)
    return JSONResponse(report, status_code=200 if ready else 503)


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    allowed, tenant = gateway(request).principal(request).operator_scope  # no key: 401
    if not allowed:
        raise Forbidden("/metrics needs an admin API key (or scrape the metrics port: GUARD_METRICS_PORT)")
    body, content_type = metrics.render_latest(tenant)
    return Response(body, media_type=content_type)
