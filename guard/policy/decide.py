"""The decision engine: guard results + policy + direction -> ``Decision``. Pure: no I/O, no clock.

Rules, in full:

* **Categories** (Llama Guard, when the policy applies it to the direction). A code ``c`` with rule
  threshold ``t`` crosses when ``category_scores[c] >= t`` (P(unsafe) x P(c listed first)), or when
  the decoded output lists ``c`` and ``unsafe_score >= t``. Equal to the threshold crosses. The rule
  is the category's own entry (with its ``input``/``output`` override), else ``other_categories``;
  excluded codes are never judged. Every crossing is a reason, ``allow`` rules included (they are
  recorded, they just do not change the action). A conversation judged in pieces (longer than the
  model reads) says so in the reason's detail.
  Llama Guard's extra judgements (``GuardResults.llama_guard_extra``: other turns of the request,
  readings of a message's text, see ``guard.policy.plan``) are judged the same way, by the rules of
  the direction being decided (the caller sent them), each reason naming its message and reading.
* **Prompt injection** (Prompt Guard, input only). Each scanned message is judged against the
  thresholds of its source: ``jailbreak_score >= jailbreak`` is a ``jailbreak`` reason,
  ``injection_score >= injection`` an ``injection`` reason; ``null`` thresholds are off.
* **Guard errors**. A guard the policy applies that failed or timed out (``GuardResults.errors`` /
  ``timeouts``) is a ``guard_error`` reason whose action is that guard's ``on_error`` for the
  direction (default ``block``): never a silent allow. ``guard_status`` says ``timeout`` or
  ``guard_error``. Results of guards the policy does not apply are ignored.
* **Action**: the most severe reason wins (block > escalate > redact > flag > allow); none = allow.
  In shadow mode ``action`` is what would have happened and ``effective_action`` is ``allow``.
* **User message**: the ``message`` of the first reason at the winning severity that has one, else
  the policy's ``refusal`` for a block; none when the effective action is ``allow``.
"""

from __future__ import annotations

from typing import Iterator

from guard.policy.schema import Policy
from guard.types import (
    Action,
    Decision,
    Direction,
    GuardResults,
    GuardStatus,
    LlamaGuardResult,
    PromptGuardResult,
    Reason,
)


def decide(policy: Policy, direction: Direction, results: GuardResults) -> Decision:
    reasons = [
        *_guard_error_reasons(policy, direction, results),
        *_category_reasons(policy, direction, results.llama_guard),
        *(reason for extra in results.llama_guard_extra for reason in _category_reasons(policy, direction, extra)),
        *_injection_reasons(policy, direction, results.prompt_guard),
    ]
    action = Action.most_severe([r.action for r in reasons])
    effective = Action.ALLOW if policy.shadow else action
    return Decision(
        action=action,
        effective_action=effective,
        direction=direction,
        reasons=reasons,
        policy=policy.ref,
        shadow=policy.shadow,
        guard_status=_guard_status(policy, direction, results),
        user_message=_user_message(policy, effective, reasons),
    )


def _applied_failures(policy: Policy, direction: Direction, results: GuardResults) -> Iterator[tuple[str, str | None]]:
    """(guard name, error text or None for a timeout) for each failure that counts."""
    for name in sorted(set(results.errors) | set(results.timeouts)):
        settings = policy.guards.get(name)
        if settings is not None and not settings.applies(direction):
            continue
        yield name, (None if name in results.timeouts else results.errors[name])


def _guard_error_reasons(policy: Policy, direction: Direction, results: GuardResults) -> Iterator[Reason]:
    for name, error in _applied_failures(policy, direction, results):
        settings = policy.guards.get(name)
        # A failure of a guard the policy does not know is still a failure: fail closed.
        action = settings.on_error.for_direction(direction) if settings is not None else Action.BLOCK
        detail = f"{name} timed out" if error is None else f"{name}: {error}"
        yield Reason(kind="guard_error", action=action, detail=detail)


def _guard_status(policy: Policy, direction: Direction, results: GuardResults) -> GuardStatus:
    failures = list(_applied_failures(policy, direction, results))
    if any(error is None for _, error in failures):
        return "timeout"
    return "guard_error" if failures else "ok"


def _category_reasons(policy: Policy, direction: Direction, result: LlamaGuardResult | None) -> Iterator[Reason]:
    if result is None or not policy.guards.llama_guard.applies(direction):
        return
    codes = list(dict.fromkeys([*result.categories, *result.category_scores]))
    for code in codes:
        rule = policy.rule(code, direction)
        if rule is None:
            continue
        score = result.category_scores.get(code)
        if score is not None and score >= rule.threshold:
            basis = "category score"
        elif code in result.categories and result.unsafe_score >= rule.threshold:
            score, basis = result.unsafe_score, "listed in the output; unsafe score"
        else:
            continue
        if result.pieces > 1:
            basis += f" (the conversation was judged in {result.pieces} pieces)"
        if result.reading:
            basis += f"; {result.reading} (message {result.message_index})"
        yield Reason(kind="category", action=rule.action, code=code, score=score, threshold=rule.threshold,
                     message_index=result.message_index, detail=basis, message=rule.message)


def _injection_reasons(policy: Policy, direction: Direction, results: list[PromptGuardResult]) -> Iterator[Reason]:
    if not policy.guards.prompt_guard.applies(direction):
        return
    section = policy.prompt_injection
    for result in results:
        source = section.source(result.source)
        action = source.action or section.action
        message = source.message if source.message is not None else section.message
        detail = f"segment {result.segment_index + 1} of {result.segments}"
        if result.reading:
            detail += f"; {result.reading}"
        for kind, score, threshold in (("jailbreak", result.jailbreak_score, source.jailbreak),
                                       ("injection", result.injection_score, source.injection)):
            if threshold is not None and score >= threshold:
                yield Reason(kind=kind, action=action, score=score, threshold=threshold, source=result.source,
                             message_index=result.message_index, detail=detail, message=message)


def _user_message(policy: Policy, effective: Action, reasons: list[Reason]) -> str | None:
    if effective is Action.ALLOW:
        return None
    for reason in reasons:
        if reason.action is effective and reason.message:
            return reason.message
    return policy.refusal if effective is Action.BLOCK else None
