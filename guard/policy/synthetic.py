"""Synthetic audit records with random guard scores, for replay tests and the replay bench.

Scores are drawn so that every outcome occurs: most below the usual thresholds, some above, some
exactly at 0.5, some guard failures. Deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import random

from guard.policy.decide import decide
from guard.policy.schema import Policy
from guard.taxonomy import HAZARD_CODES
from guard.types import (
    AuditRecord,
    GuardResults,
    LlamaGuardResult,
    MessageSource,
    ModelInfo,
    PromptGuardResult,
)

_LG = ModelInfo(model="synthetic/llama-guard", family="llama-guard-3-1b")
_PG = ModelInfo(model="synthetic/prompt-guard", family="prompt-guard-2")
_SOURCES: tuple[MessageSource, ...] = ("user", "tool", "document")
_DIRECTIONS = ("input", "input", "output", "stream_window", "review")


def _score(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.05:
        return 0.5
    return round(rng.random() ** 3 if roll < 0.8 else rng.random(), 4)


def synthetic_results(rng: random.Random, direction: str) -> GuardResults:
    errors, timeouts = {}, []
    if rng.random() < 0.05:
        errors["llama_guard"] = "model_unavailable: worker down"
        llama = None
    elif rng.random() < 0.03:
        timeouts.append("llama_guard")
        llama = None
    else:
        scores = {code: _score(rng) for code in rng.sample(HAZARD_CODES, rng.randint(0, 3))}
        unsafe = min(1.0, round(sum(scores.values()), 4))
        listed = [c for c, s in scores.items() if s >= 0.5 and rng.random() < 0.8]
        llama = LlamaGuardResult(model=_LG, unsafe_score=unsafe, unsafe_score_pair=unsafe,
                                 categories=listed, category_scores=scores)
    prompts = []
    if direction == "input":
        for index in range(rng.randint(0, 3)):
            jailbreak = _score(rng)
            prompts.append(PromptGuardResult(model=_PG, jailbreak_score=jailbreak, injection_score=_score(rng),
                                             source=rng.choice(_SOURCES), message_index=index))
        if rng.random() < 0.03:
            timeouts.append("prompt_guard")
    return GuardResults(llama_guard=llama, prompt_guard=prompts, errors=errors, timeouts=timeouts)


def synthetic_records(policy: Policy, count: int, *, seed: int = 0) -> list[AuditRecord]:
    """``count`` records decided under ``policy`` (as the gateway would have written them)."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        direction = _DIRECTIONS[n % len(_DIRECTIONS)]
        results = synthetic_results(rng, direction)
        judged = "output" if direction in ("output", "stream_window") else "input"
        decision = decide(policy, judged, results)
        records.append(AuditRecord(
            id=f"rec-{n:05d}", request_id=f"req-{n // 2:05d}", tenant=rng.choice(["default", "acme", "kids"]),
            direction=direction, window_index=0 if direction == "stream_window" else None,
            policy=policy.ref, results=results, decision=decision, guard_status=decision.guard_status,
            content_sha256=hashlib.sha256(f"content {n}".encode()).hexdigest(), retention="none",
        ))
    return records
