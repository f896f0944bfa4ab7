"""Thin routers: HTTP in, one call into ``guard.gateway.serving.Gateway``, HTTP out."""

from guard.gateway.routes import chat, guard_api, health, models, moderations

ROUTERS = [chat.router, moderations.router, models.router, guard_api.router, health.router]
