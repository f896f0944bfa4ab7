"""The judgement cache (guard.executor.cache): a counting fake for the LRU rules, the demo models for
equality with fresh results and for what a re-sent chat history costs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from guard import metrics
from guard.checks import run_checks
from guard.errors import GuardTimeout
from guard.executor.cache import CachingExecutor
from guard.executor.inprocess import InProcessExecutor
from guard.policy import decide, load_policy_file, plan_checks
from guard.settings import GuardSettings
from guard.types import (
    LlamaGuardRequest,
    LlamaGuardResult,
    Message,
    ModelInfo,
    PromptGuardRequest,
    PromptGuardResult,
)
from tests.test_checks import FAMILY, executor, settings  # noqa: F401 - the demo models' fixtures

DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "policies" / "default.yaml"


class Counting:
    """An executor that records every request it is sent; a fake model unless ``inner`` is given."""

    def __init__(self, inner: Any = None, *, fail: BaseException | None = None) -> None:
        self.inner = inner
        self.fail = fail
        self.sent: dict[str, list[Any]] = {"llama_guard": [], "prompt_guard": []}
        self.model = ModelInfo(model="fake", family=FAMILY)

    async def llama_guard(self, requests: Sequence[LlamaGuardRequest], timeout: float) -> list[LlamaGuardResult]:
        self.sent["llama_guard"] += requests
        if self.fail is not None:
            raise self.fail
        if self.inner is not None:
            return await self.inner.llama_guard(requests, timeout)
        return [LlamaGuardResult(model=self.model, unsafe_score=len(r.conversation) / 100,
                                 unsafe_score_pair=0.5, latency_ms=7.0) for r in requests]

    async def prompt_guard(self, requests: Sequence[PromptGuardRequest], timeout: float) -> list[PromptGuardResult]:
        self.sent["prompt_guard"] += requests
        if self.inner is not None:
            return await self.inner.prompt_guard(requests, timeout)
        return [PromptGuardResult(model=self.model, jailbreak_score=len(r.text) / 100, injection_score=0.0,
                                  latency_ms=3.0) for r in requests]

    async def status(self) -> list[Any]:
        return []

    def close(self) -> None:
        pass


def lg(text: str, **fields: Any) -> LlamaGuardRequest:
    return LlamaGuardRequest(conversation=[Message(role="user", content=text)], **fields)


def judge(executor: Any, requests: list[Any], kind: str = "llama_guard") -> list[Any]:
    return asyncio.run(getattr(executor, kind)(requests, 30.0))


def cache_total(guard: str, result: str) -> float:
    return metrics.JUDGEMENT_CACHE.labels(guard=guard, result=result)._value.get()


def test_a_repeat_is_a_hit_marked_cached_and_otherwise_equal() -> None:
    inner = Counting()
    cached = CachingExecutor(inner, size=100)
    hits = cache_total("llama_guard", "hit")
    [fresh] = judge(cached, [lg("hello")])
    [again] = judge(cached, [lg("hello")])
    assert len(inner.sent["llama_guard"]) == 1
    assert not fresh.cached and again.cached and again.latency_ms == 0.0
    assert again.model_copy(update={"cached": False, "latency_ms": fresh.latency_ms}) == fresh
    assert cache_total("llama_guard", "hit") == hits + 1
    # Identical requests of one call are sent once.
    judge(cached, [lg("a"), lg("b"), lg("a")])
    assert [r.conversation[0].content for r in inner.sent["llama_guard"][1:]] == ["a", "b"]


def test_anything_the_result_depends_on_changes_the_key() -> None:
    inner = Counting()
    cached = CachingExecutor(inner, size=100)
    judge(cached, [lg("hello")])
    judge(cached, [lg("hello", categories={"S1": "Violent Crimes."}), lg("hello", excluded=["S1"]),
                   lg("hello", decode=True), LlamaGuardRequest(conversation=[Message(role="assistant", content="hello")])])
    judge(cached, [PromptGuardRequest(text="hello"), PromptGuardRequest(text="hello", source="tool")], "prompt_guard")
    assert len(inner.sent["llama_guard"]) == 5 and len(inner.sent["prompt_guard"]) == 2
    # Category order is part of the prompt, so it is part of the key.
    two = {"S1": "Violent Crimes.", "S2": "Non-Violent Crimes."}
    assert cached.key("llama_guard", lg("x", categories=two)) != cached.key(
        "llama_guard", lg("x", categories=dict(reversed(two.items()))))
    # The configured model (id, revision, ...) is part of the key.
    one, other = (CachingExecutor.wrap(inner, GuardSettings(llama_guard=m, family=FAMILY)) for m in ("a", "b"))
    assert one.key("llama_guard", lg("x")) != other.key("llama_guard", lg("x"))
    assert CachingExecutor.wrap(inner, GuardSettings(judgement_cache_size=0)) is inner


def test_errors_and_timeouts_are_not_cached() -> None:
    inner = Counting(fail=GuardTimeout("llama_guard did not answer within 30s"))
    cached = CachingExecutor(inner, size=100)
    for _ in range(2):
        with pytest.raises(GuardTimeout):
            judge(cached, [lg("hello")])
    assert len(inner.sent["llama_guard"]) == 2 and len(cached.cache) == 0
    inner.fail = None
    assert not judge(cached, [lg("hello")])[0].cached


def test_the_lru_is_bounded_and_evicts_the_least_recently_used() -> None:
    inner = Counting()
    cached = CachingExecutor(inner, size=3)
    judge(cached, [lg("a"), lg("b"), lg("c")])
    judge(cached, [lg("a")])  # a is now the most recent; b the oldest
    judge(cached, [lg("d")])  # evicts b
    assert len(cached.cache) == 3
    sent = len(inner.sent["llama_guard"])
    assert [r.cached for r in judge(cached, [lg("a"), lg("c"), lg("d")])] == [True, True, True]
    assert not judge(cached, [lg("b")])[0].cached
    assert len(inner.sent["llama_guard"]) == sent + 1


def test_another_model_behind_the_executor_drops_its_kinds_entries() -> None:
    inner = Counting()
    cached = CachingExecutor(inner, size=100)
    judge(cached, [lg("a")])
    judge(cached, [PromptGuardRequest(text="a")], "prompt_guard")
    inner.model = ModelInfo(model="redeployed", family=FAMILY)
    judge(cached, [lg("b")])
    assert not judge(cached, [lg("a")])[0].cached
    assert judge(cached, [lg("a")])[0].model.model == "redeployed"


def test_cached_results_equal_fresh_ones_on_the_demo_models(executor: InProcessExecutor, settings: GuardSettings) -> None:
    inner = Counting(executor)
    cached = CachingExecutor.wrap(inner, settings)
    hazard = lg("where is the zorblax?", decode=True)
    [fresh] = judge(cached, [hazard])
    [again] = judge(cached, [hazard])
    assert fresh.categories == ["S9"] and again.cached
    assert again.model_copy(update={"cached": False, "latency_ms": fresh.latency_ms}) == fresh
    # Another category set is a miss, judged by the model.
    [narrowed] = judge(cached, [lg("where is the zorblax?", decode=True, excluded=["S1"])])
    assert not narrowed.cached and len(inner.sent["llama_guard"]) == 2


def test_a_re_sent_chat_costs_only_its_new_windows(executor: InProcessExecutor, settings: GuardSettings) -> None:
    """A chat of 5 exchanges and a question, then the same chat with the answer and one more question
    (context.judge: all): the second request sends the models only the windows the first did not
    judge, and decides as an uncached run."""
    policy = load_policy_file(DEFAULT_POLICY)
    assert policy.context.judge == "all"
    first: list[Message] = []
    for i in range(5):
        first += [Message(role="user", content=f"question {i} about the garden"),
                  Message(role="assistant", content=f"answer {i}: water it")]
    first.append(Message(role="user", content="thanks, one more question"))
    second = first + [Message(role="assistant", content="ask away"),
                      Message(role="user", content="where is the zorblax?")]

    inner = Counting(executor)
    cached = CachingExecutor.wrap(inner, settings)
    plans = [plan_checks(policy, chat, "input", family=FAMILY) for chat in (first, second)]
    done = asyncio.run(run_checks(cached, plans[0], 60.0))
    assert not done.errors and not done.timeouts
    sent = {kind: len(requests) for kind, requests in inner.sent.items()}
    assert sent == {"llama_guard": 11, "prompt_guard": 6}

    results = asyncio.run(run_checks(cached, plans[1], 60.0))
    # Only the new windows: the re-sent assistant turn's, and the new question's (main and its scan).
    assert [r.conversation[-1].content for r in inner.sent["llama_guard"][11:]] == [
        "where is the zorblax?", "ask away"]
    assert [r.text for r in inner.sent["prompt_guard"][6:]] == ["where is the zorblax?"]
    assert len(plans[1].llama_guard_requests) == 13
    assert results.llama_guard is not None and not results.llama_guard.cached
    assert sum(r.cached for r in results.llama_guard_extra) == 11

    # An uncached run decides the same. (Scores agree to float noise only: a model's scores move in
    # the 7th digit with the other requests of its batch, cache or not.)
    decisions = [decide(policy, "input", r) for r in (results, asyncio.run(run_checks(executor, plans[1], 60.0)))]
    assert decisions[0].action == decisions[1].action and decisions[0].action.value == "block"
    assert [(r.kind, r.code, r.message_index, r.action) for r in decisions[0].reasons] == [
        (r.kind, r.code, r.message_index, r.action) for r in decisions[1].reasons]
    for mine, theirs in zip(decisions[0].reasons, decisions[1].reasons, strict=True):
        assert mine.score == pytest.approx(theirs.score, rel=1e-4)
