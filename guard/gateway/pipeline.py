"""One guarded direction: plan -> checks (executor) -> decision -> audit -> metrics.

The audit record is durable before ``check`` returns, so whatever the caller releases afterwards
was recorded first; with ``defer_audit`` the write runs on while the caller does work that
releases nothing (opening the upstream call), and the caller awaits ``Checked.audited`` before
it answers. Guard failures never raise here (they are part of the decision, through the
policy's ``on_error``); an audit store that cannot take the record does (``AuditUnavailable``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from guard import metrics
from guard.audit.record import build_record
from guard.checks import run_checks
from guard.executor.base import Executor
from guard.gateway.context import RequestContext
from guard.policy import Policy, decide, plan_checks
from guard.types import Action, AuditDirection, AuditRecord, Decision, Direction, GuardResults, Message


class AuditSink(Protocol):
    async def append_async(self, records: Sequence[AuditRecord]) -> Any: ...


@dataclass(frozen=True)
class Checked:
    decision: Decision
    results: GuardResults
    check_ms: float
    # The pending audit write (``defer_audit``); None once the record is durable.
    audit_write: asyncio.Future[Any] | None = None

    async def audited(self) -> None:
        if self.audit_write is not None:
            await self.audit_write

    @property
    def action(self) -> Action:
        return self.decision.effective_action


class Guardrail:
    def __init__(self, executor: Executor, audit: AuditSink, *, family: str | None = None) -> None:
        self.executor = executor
        self.audit = audit
        self.family = family

    async def check(
        self,
        ctx: RequestContext,
        policy: Policy,
        messages: Sequence[Message],
        direction: Direction,
        *,
        content: Sequence[Message] | str | None = None,
        audit_direction: AuditDirection | None = None,
        window_index: int | None = None,
        observe: bool = True,
        defer_audit: bool = False,
    ) -> Checked:
        started = time.perf_counter()
        plan = plan_checks(policy, messages, direction, family=self.family)
        results = await run_checks(self.executor, plan, plan.timeouts)
        decision = decide(policy, direction, results)
        check_ms = (time.perf_counter() - started) * 1000
        record = build_record(
            request_id=ctx.request_id,
            direction=audit_direction or direction,
            results=results,
            decision=decision,
            content=messages if content is None else content,
            retention=policy.audit.retention,
            tenant=ctx.tenant_name,
            api_key_id=ctx.principal.key_id,
            route=ctx.route,
            window_index=window_index,
            latency_ms={"check": check_ms},
        )
        write = None
        if defer_audit:
            write = asyncio.ensure_future(self.audit.append_async([record]))
        else:
            await self.audit.append_async([record])  # no task of its own: one loop hop fewer
        if observe:
            observe_decision(ctx, direction, decision)
        return Checked(decision=decision, results=results, check_ms=check_ms, audit_write=write)


def observe_decision(ctx: RequestContext, direction: str, decision: Decision) -> None:
    codes = [r.code for r in decision.reasons if r.kind == "category" and r.code]
    metrics.observe_decision(ctx.tenant_name, direction, decision.action.value, codes)
    for reason in decision.reasons:
        if reason.kind == "guard_error" and reason.action is not Action.BLOCK:
            guard = (reason.detail or "guard").split(" ")[0].rstrip(":")
            metrics.FAIL_OPEN.labels(ctx.tenant_name, direction, guard).inc()
