"""The audit record of one ``/v1/moderations`` input: what the caller was told, and why.

The endpoint reports, it never enforces, so its decision is the answer itself: ``flag`` when the
result is flagged, else ``allow``; one ``category`` reason per code Llama Guard reported (action
``flag``, the code's score), or, when Llama Guard failed on the input, one ``guard_error`` reason
whose action is the caller's policy's ``on_error`` (the answer's ``flagged`` follows it) and the
``timeout``/``guard_error`` status. The record's direction is ``moderation`` (``guard policy
replay`` skips it: the policy's categories did not decide it), its policy the caller's (its
``on_error``, guard timeouts and ``audit.retention`` applied), and ``moderation`` holds OpenAI's
keys and scores as answered, with the mapping file's version. Prompt Guard scores are extras of the
answer: a failing Prompt Guard leaves them out of both.
"""

from __future__ import annotations

from guard.audit.record import build_record
from guard.errors import GuardError, GuardTimeout
from guard.gateway.context import RequestContext
from guard.gateway.moderation import ModerationMap
from guard.gateway.protocol import ModerationResult
from guard.policy import Policy
from guard.types import (
    Action,
    AuditRecord,
    Decision,
    GuardResults,
    LlamaGuardResult,
    ModerationAnswer,
    PromptGuardResult,
    Reason,
)


def moderation_record(
    ctx: RequestContext,
    policy: Policy,
    mapping: ModerationMap,
    *,
    index: int,
    text: str,
    result: ModerationResult,
    judged: LlamaGuardResult | GuardError,
    prompt_guard: PromptGuardResult | None,
    on_error: Action,
    check_ms: float,
) -> AuditRecord:
    """The record of input ``index`` (``text``), answered with ``result``; ``judged`` is Llama
    Guard's result on it or the failure that ``result`` reports."""
    failed = judged if isinstance(judged, GuardError) else None
    timed_out = isinstance(failed, GuardTimeout)
    results = GuardResults(
        llama_guard=None if failed else judged,
        prompt_guard=[prompt_guard] if prompt_guard is not None else [],
        errors={"llama_guard": f"{failed.kind}: {failed.message}"} if failed and not timed_out else {},
        timeouts=["llama_guard"] if timed_out else [],
    )
    action = Action.FLAG if result.flagged else Action.ALLOW
    decision = Decision(
        action=action,
        effective_action=action,
        direction="input",
        reasons=_reasons(judged, on_error),
        policy=policy.ref,
        guard_status="timeout" if timed_out else "guard_error" if failed else "ok",
    )
    record = build_record(
        request_id=ctx.request_id,
        direction="moderation",
        results=results,
        decision=decision,
        content=text,
        retention=policy.audit.retention,
        tenant=ctx.tenant_name,
        api_key_id=ctx.principal.key_id,
        route=ctx.route,
        latency_ms={"check": check_ms},
    )
    record.moderation = ModerationAnswer(
        input_index=index,
        flagged=result.flagged,
        categories=[key for key, on in result.categories.items() if on],
        category_scores=result.category_scores,
        mapping_version=mapping.version,
        on_error=on_error if failed else None,
    )
    return record


def _reasons(judged: LlamaGuardResult | GuardError, on_error: Action) -> list[Reason]:
    if isinstance(judged, GuardTimeout):
        return [Reason(kind="guard_error", action=on_error, detail="llama_guard timed out")]
    if isinstance(judged, GuardError):
        detail = f"llama_guard: {judged.kind}: {judged.message}"
        return [Reason(kind="guard_error", action=on_error, detail=detail)]
    return [
        Reason(kind="category", action=Action.FLAG, code=code, score=judged.category_scores.get(code))
        for code in judged.categories
    ]
