"""``create_app(settings, services)``: the FastAPI app, with a lifespan that starts and closes the
services (policy watcher, model warm-up, executor, audit store, upstream connections)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from guard import __version__, metrics
from guard.errors import ConfigError
from guard.gateway.errors import install_error_handlers
from guard.gateway.middleware import GatewayMiddleware
from guard.gateway.routes import ROUTERS
from guard.gateway.routes.chat import PATH as CHAT_PATH
from guard.gateway.routes.chat import ChatEndpoint
from guard.gateway.services import GatewayServices, build_services
from guard.gateway.serving import Gateway
from guard.settings import GuardSettings

log = logging.getLogger("guard.gateway")


def create_app(settings: GuardSettings, services: GatewayServices | None = None) -> FastAPI:
    """The gateway app. Without ``services`` they are built from ``settings`` (and closed at
    shutdown); given ones are started and closed by the app too."""
    services = services or build_services(settings)
    listener = _metrics_listener(settings)  # here: a port in use is a ConfigError before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            if listener is not None:
                listener.shutdown()
                listener.server_close()
            await services.close()

    app = GatewayAPI(title="guard", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    gateway = app.state.gateway = Gateway(services)
    app.state.metrics_listener = listener
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.max_body_bytes)
    app.chat_endpoint = GatewayMiddleware(ChatEndpoint(gateway), max_body_bytes=settings.max_body_bytes)
    return app


class GatewayAPI(FastAPI):
    """FastAPI, except that ``POST /v1/chat/completions`` goes straight to its pure ASGI endpoint
    (with the same ``GatewayMiddleware``), past FastAPI's middleware stack and router."""

    chat_endpoint: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.chat_endpoint is not None
            and scope["type"] == "http"
            and scope["path"] == CHAT_PATH
            and scope["method"] == "POST"
        ):
            scope["app"] = self
            await self.chat_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _metrics_listener(settings: GuardSettings) -> Any:
    """``/metrics`` without a key on ``metrics_host:metrics_port``, when a port is set (a thread)."""
    if settings.metrics_port is None:
        return None
    try:
        server, _thread = metrics.start_metrics_server(settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc.strerror}"
        ) from None
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.server_port)
    return server
