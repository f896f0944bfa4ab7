"""Small builders for guard results and policies used by the policy tests."""

from __future__ import annotations

from typing import Any

from guard.policy import Policy, policy_from_data
from guard.types import GuardResults, LlamaGuardResult, MessageSource, ModelInfo, PromptGuardResult

INFO = ModelInfo(model="test", family="llama-guard-3-1b")


def lg(scores: dict[str, float] | None = None, *, listed: list[str] | None = None,
       unsafe: float | None = None) -> LlamaGuardResult:
    scores = scores or {}
    unsafe = unsafe if unsafe is not None else max(scores.values(), default=0.0)
    return LlamaGuardResult(model=INFO, unsafe_score=unsafe, unsafe_score_pair=unsafe,
                            categories=listed if listed is not None else [], category_scores=scores)


def pg(jailbreak: float, injection: float | None = None, *, source: MessageSource = "user",
       index: int | None = None) -> PromptGuardResult:
    return PromptGuardResult(model=INFO, jailbreak_score=jailbreak,
                             injection_score=jailbreak if injection is None else injection,
                             source=source, message_index=index)


def results(llama: LlamaGuardResult | None = None, prompts: list[PromptGuardResult] | None = None,
            errors: dict[str, str] | None = None, timeouts: list[str] | None = None) -> GuardResults:
    return GuardResults(llama_guard=llama, prompt_guard=prompts or [], errors=errors or {},
                        timeouts=timeouts or [])


def policy(**data: Any) -> Policy:
    data.setdefault("id", "t")
    return policy_from_data(data)
