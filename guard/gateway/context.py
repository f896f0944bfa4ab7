"""Who is asking and with which policy and upstream: resolved once per request, then read-only.

A tenant may only name policies its config lists and only reach its own upstream routes; a
policy it may not use answers exactly like one that does not exist (404), so policy ids of other
tenants are not revealed.
"""

from __future__ import annotations

from dataclasses import dataclass

from guard.errors import PolicyNotFound, UpstreamError
from guard.gateway.auth import Principal
from guard.gateway.config import GatewayConfig, TenantConfig, UpstreamRoute
from guard.policy import Policy, PolicySet


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    principal: Principal
    tenant: TenantConfig
    route: str

    @property
    def tenant_name(self) -> str:
        return self.principal.tenant


def make_context(config: GatewayConfig, principal: Principal, request_id: str, route: str) -> RequestContext:
    return RequestContext(
        request_id=request_id, principal=principal, tenant=config.tenant(principal.tenant), route=route
    )


def resolve_policy(policies: PolicySet, ctx: RequestContext, requested: str | None) -> Policy:
    """The caller's explicit choice (header or field), else the key's pin, else attachments and
    defaults, always within what the tenant may use."""
    pinned = ctx.principal.policy
    if requested and pinned and requested != pinned:
        raise PolicyNotFound(f"no policy {requested!r} for this API key", param="policy")
    choice = requested or pinned
    if choice and not ctx.tenant.allows(choice):
        raise PolicyNotFound(f"no policy {choice!r}", param="policy")
    policy = policies.select(
        requested=choice, api_key=ctx.principal.key_id, tenant=ctx.tenant_name, route=ctx.route
    )
    if ctx.tenant.allows(policy.id):
        return policy
    fallback = ctx.tenant.default_policy or ctx.tenant.policies[0]
    return policies.get(fallback)


def upstream_route(ctx: RequestContext, model: str) -> UpstreamRoute:
    route = ctx.tenant.route_for(model)
    if route is None:
        raise UpstreamError("no upstream is configured for this tenant (set --upstream or a tenant upstream)")
    return route
