"""``create_app(settings, services)``: the FastAPI app, with a lifespan that starts and closes the
services (policy watcher, model warm-up, executor, audit store, upstream connections)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from guard import __version__
from guard.gateway.errors import install_error_handlers
from guard.gateway.middleware import GatewayMiddleware
from guard.gateway.routes import ROUTERS
from guard.gateway.services import GatewayServices, build_services
from guard.gateway.serving import Gateway
from guard.settings import GuardSettings


def create_app(settings: GuardSettings, services: GatewayServices | None = None) -> FastAPI:
    """The gateway app. Without ``services`` they are built from ``settings`` (and closed at
    shutdown); given ones are started and closed by the app too."""
    services = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            await services.close()

    app = FastAPI(title="guard", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.gateway = Gateway(services)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
