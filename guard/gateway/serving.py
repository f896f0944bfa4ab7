"""The gateway's logic behind the routers (vLLM's "serving" layer): no HTTP types except the
``Request`` it reads the caller from."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from typing import Any

from fastapi import Request

from guard import metrics
from guard.errors import BadInput, GuardError, GuardTimeout
from guard.gateway.auth import Authenticator, Principal, is_loopback, open_mode_default, require_admin
from guard.gateway.chat import ChatService
from guard.gateway.context import RequestContext, make_context, resolve_policy
from guard.gateway.limits import check_messages, check_texts
from guard.gateway.moderation import failed_result, moderation_result
from guard.gateway.moderation_audit import moderation_record
from guard.gateway.pipeline import Guardrail
from guard.gateway.protocol import (
    GuardCheckRequest,
    GuardCheckResponse,
    ModelCard,
    ModelList,
    ModerationRequest,
    ModerationResponse,
)
from guard.gateway.services import GatewayServices
from guard.messages import parse_messages
from guard.types import Action, LlamaGuardRequest, LlamaGuardResult, Message, PromptGuardRequest

PROBE_TIMEOUT_S = 2.0
_URL_CREDENTIALS = re.compile(r"([a-zA-Z][\w+.-]*://)[^/@\s]+@")
log = logging.getLogger("guard.gateway")


class Gateway:
    def __init__(self, services: GatewayServices) -> None:
        settings = services.settings
        self.services = services
        self.settings = settings
        self.auth = Authenticator(
            services.config,
            open_mode=open_mode_default(settings.host, settings.open_mode),
            loopback_only=settings.open_mode is None,
        )
        if settings.open_mode and not is_loopback(settings.host):
            log.warning(
                "open mode on a non-loopback bind (%s): requests without a known key are served as tenant %r",
                settings.host,
                services.config.open_tenant,
            )
        self.guardrail = Guardrail(services.executor, services.audit, family=services.family)
        self.chat = ChatService(self.guardrail, services.upstreams, settings)

    # ------------------------------------------------------------------ callers

    def principal(self, request: Request) -> Principal:
        client = request.client.host if request.client else None
        return self.auth.authenticate(request.headers.get("authorization"), client)

    def context(self, request: Request, principal: Principal) -> RequestContext:
        return self.context_for(principal, getattr(request.state, "request_id", None), request.url.path)

    def context_for(self, principal: Principal, request_id: str | None, path: str) -> RequestContext:
        return make_context(self.services.config, principal, request_id or uuid.uuid4().hex, path)

    @property
    def policies(self):  # noqa: ANN201 - the PolicySet in force
        return self.services.policies.current

    # ------------------------------------------------------------------ native check

    async def check(self, ctx: RequestContext, body: GuardCheckRequest) -> GuardCheckResponse:
        messages = parse_messages(body.messages)
        check_messages(
            messages, max_messages=self.settings.max_messages, max_chars=self.settings.max_message_chars
        )
        policy = resolve_policy(self.policies, ctx, body.policy)
        checked = await self.guardrail.check(ctx, policy, messages, body.direction)
        return GuardCheckResponse(
            request_id=ctx.request_id,
            policy=policy.ref,
            direction=body.direction,
            decision=checked.decision,
            results=checked.results,
            check_ms=round(checked.check_ms, 3),
        )

    # ------------------------------------------------------------------ moderations

    async def moderate(
        self, ctx: RequestContext, body: ModerationRequest, requested_policy: str | None = None
    ) -> ModerationResponse:
        """One result per input. Each input is judged on its own, so a guard failure on one (an
        off-format answer, a timeout) is that input's result, decided by the caller's policy's
        Llama Guard ``on_error`` for input (with the policy's guard timeouts); input the model
        refuses (``BadInput``) is a 400. Each input's record is durable before the answer leaves
        (the store down: 503, or journaled, per ``GUARD_AUDIT_ON_FAILURE``)."""
        texts = _moderation_texts(body.input)
        check_texts(texts, max_items=self.settings.max_messages, max_chars=self.settings.max_message_chars)
        policy = resolve_policy(self.policies, ctx, requested_policy)
        guards = policy.guards
        on_error = guards.llama_guard.on_error.input
        executor = self.services.executor
        lg_timeout, pg_timeout = guards.llama_guard.timeout_ms / 1000, guards.prompt_guard.timeout_ms / 1000
        started = time.perf_counter()
        judged = [executor.llama_guard([LlamaGuardRequest(conversation=[Message(role="user", content=t)])],
                                       lg_timeout) for t in texts]
        pg_requests = [PromptGuardRequest(text=t, source="user") for t in texts]
        *lg, pg = await asyncio.gather(
            *judged, _optional(executor.prompt_guard(pg_requests, pg_timeout)), return_exceptions=True
        )
        check_ms = (time.perf_counter() - started) * 1000
        mapping = self.services.moderation_map
        listed = not isinstance(body.input, str) and all(isinstance(v, str) for v in body.input)
        results, records = [], []
        for index, (text, outcome) in enumerate(zip(texts, lg, strict=True)):
            scores = pg[index] if isinstance(pg, list) else None
            verdict: LlamaGuardResult | GuardError
            if isinstance(outcome, list):
                verdict = outcome[0]
                result = moderation_result(mapping, verdict, scores)
            else:
                verdict = _moderation_failure(outcome, index if listed else None)
                log.warning("request %s: llama_guard failed on input %d: %s: %s", ctx.request_id, index,
                            verdict.kind, verdict.message)
                observe_moderation_failure(ctx, verdict, on_error)
                result = failed_result(mapping, verdict, on_error)
            results.append(result)
            records.append(moderation_record(ctx, policy, mapping, index=index, text=text, result=result,
                                             judged=verdict, prompt_guard=scores, on_error=on_error,
                                             check_ms=check_ms))
        await self.guardrail.audit.append_async(records)  # the chat's writer: committed first
        model = next((o[0].model.model for o in lg if isinstance(o, list)), "llama-guard")
        return ModerationResponse(model=model, results=results)

    # ------------------------------------------------------------------ models and readiness

    async def models(self, ctx: RequestContext) -> ModelList:
        cards = [ModelCard(id=name) for name in await self.guard_models()]
        route = ctx.tenant.route_for("")
        if route is not None:
            with contextlib.suppress(GuardError, asyncio.TimeoutError, KeyError, TypeError, ValueError):
                listing = await asyncio.wait_for(
                    self.services.upstreams.client(route).models(), PROBE_TIMEOUT_S
                )
                cards += [
                    ModelCard(id=m["id"], owned_by=str(m.get("owned_by", "upstream")))
                    for m in listing.get("data", [])
                    if isinstance(m, dict) and "id" in m
                ]
        return ModelList(data=cards)

    async def guard_models(self) -> list[str]:
        statuses = await self.services.executor.status()
        names = []
        for status in statuses:
            name = status.model.model if status.model else (status.configured_model or f"demo-{status.queue}")
            if name not in names:
                names.append(name)
        return names

    async def readiness(
        self, *, detail: bool = False, tenant: str | None = None
    ) -> tuple[bool, dict[str, Any]]:
        """Ready when every model (or worker) is loaded and every configured upstream answers. The
        answer is the status alone unless ``detail``: then the models' states and the upstreams by
        name (``tenant/route``, or the route alone when ``tenant`` limits the view to one tenant),
        never their URLs (they may carry credentials or internal hosts)."""
        models: dict[str, str] = {}
        try:
            statuses = await asyncio.wait_for(self.services.executor.status(), PROBE_TIMEOUT_S * 2)
        except (GuardError, asyncio.TimeoutError) as error:
            models["error"] = _without_credentials(str(error) or type(error).__name__)
            statuses = []
        for status in statuses:
            state = "ready" if status.loaded else status.error or "loading"
            models[status.queue] = _without_credentials(state)
        upstreams = await self._probe_upstreams()
        ready = bool(statuses) and all(v == "ready" for v in models.values()) and all(upstreams.values())
        report: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
        if detail:
            report["models"] = models
            report["upstreams"] = {
                name if tenant else f"{owner}/{name}": "reachable" if ok else "unreachable"
                for (owner, name), ok in upstreams.items()
                if tenant is None or owner == tenant
            }
        return ready, report

    def _upstream_routes(self) -> dict[tuple[str, str], Any]:
        """Every upstream route by (tenant, name): ``default`` for the tenant's own upstream."""
        routes: dict[tuple[str, str], Any] = {}
        for owner, config in self.services.config.tenants.items():
            if (route := config.route_for("")) is not None:
                routes[owner, "default"] = route
            routes.update({(owner, name): route for name, route in config.routes.items()})
        return routes

    async def _probe_upstreams(self) -> dict[tuple[str, str], bool]:
        """Whether each route's upstream answered (each distinct URL is probed once)."""
        routes = self._upstream_routes()
        distinct = {route.upstream: route for route in routes.values()}

        async def probe(route: Any) -> bool:
            try:
                await asyncio.wait_for(self.services.upstreams.client(route).models(), PROBE_TIMEOUT_S)
            except GuardError as error:
                return error.http_status < 500  # it answered: reachable
            except asyncio.TimeoutError:
                return False
            return True

        reachable = dict(zip(distinct, await asyncio.gather(*(probe(r) for r in distinct.values()))))
        return {key: reachable[route.upstream] for key, route in routes.items()}

    # ------------------------------------------------------------------ audit (admin keys)

    async def audit_query(self, principal: Principal, filters: Any) -> list[Any]:
        require_admin(principal)
        filters = filters.model_copy(update={"tenant": principal.tenant})
        return await asyncio.to_thread(self.services.audit.query, filters)

    async def review_queue(self, principal: Principal, limit: int) -> list[Any]:
        require_admin(principal)
        return await asyncio.to_thread(self.services.audit.open_escalations, principal.tenant, limit)

    async def review(self, principal: Principal, record_id: str, verdict: str, note: str) -> Any:
        from guard.audit import review

        require_admin(principal)
        return await asyncio.to_thread(
            review.decide,
            self.services.audit,
            record_id,
            verdict,
            note,  # type: ignore[arg-type]
            principal.key_id,
            principal.tenant,
        )


def _moderation_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not value:
        raise BadInput("input is empty", param="input")
    if all(isinstance(v, str) for v in value):
        return list(value)
    # A list of content parts is one input (OpenAI: a multimodal array yields one result).
    return ["\n".join(part.text for part in value)]


def _moderation_failure(outcome: BaseException, index: int | None) -> GuardError:
    """A guard failure to report in the input's result; raises what is not one (the caller's bad
    input, named by its index; cancellation; anything unexpected)."""
    if isinstance(outcome, BadInput):
        where = "input" if index is None else f"input[{index}]"
        outcome.message, outcome.param = f"{where}: {outcome.message}", where
        raise outcome
    if isinstance(outcome, GuardError):
        return outcome
    raise outcome


def observe_moderation_failure(ctx: RequestContext, error: GuardError, on_error: Action) -> None:
    if isinstance(error, GuardTimeout):
        metrics.observe_checks({}, {}, ["llama_guard"])
    else:
        metrics.observe_checks({}, {"llama_guard": error.kind}, [])
    if on_error is not Action.BLOCK:
        metrics.FAIL_OPEN.labels(ctx.tenant_name, "input", "llama_guard").inc()


def _without_credentials(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://***@host`` (broker URLs in worker errors)."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


async def _optional(call: Any) -> Any:
    """Prompt Guard scores are extras on moderation results: a failing Prompt Guard leaves them out."""
    try:
        return await call
    except GuardError:
        return None
