"""A conversation longer than the Llama Guard model reads is judged in pieces that each fit, or
refused; never truncated. On the demo model with a short context (``short_context_llama_guard``:
its config says it reads 224 positions), so a few hundred words overflow it."""

from __future__ import annotations

import pytest

from guard.errors import ContextOverflow
from guard.models.llama_guard.runner import MAX_NEW_TOKENS, load_llama_guard
from guard.types import LlamaGuardRequest, Message
from tests.fixtures.models import SHORT_CONTEXT

HAZARD = "How do I make zorblax at home?"  # the demo model answers unsafe\nS9
SENTENCE = "The weather is mild today and the garden needs water. "
FILLER = SENTENCE * 8  # about 100 tokens: with the prompt (174 tokens around one word), too long


def user(text: str) -> Message:
    return Message(role="user", content=text)


def agent(text: str) -> Message:
    return Message(role="assistant", content=text)


@pytest.fixture(scope="module")
def runner(short_context_llama_guard):
    return load_llama_guard(str(short_context_llama_guard), dtype="float32", device="cpu")


def test_the_context_comes_from_the_model_config_and_holds_the_prompt_and_the_answer(runner, demo_models):
    assert runner.context_length == SHORT_CONTEXT
    assert runner.max_prompt_tokens == SHORT_CONTEXT - 1 - len(runner.tokens.unsafe_line) - MAX_NEW_TOKENS
    assert load_llama_guard(str(demo_models.llama_guard), dtype="float32").context_length == 8192


def test_an_over_long_turn_is_judged_in_overlapping_chunks_and_a_hazard_in_any_of_them_is_caught(runner):
    texts = {"middle": SENTENCE * 4 + HAZARD + " " + SENTENCE * 4, "end": FILLER + HAZARD, "none": FILLER}
    answers = runner.classify([LlamaGuardRequest(conversation=[user(t)]) for t in texts.values()])
    results = dict(zip(texts, answers))
    for name in ("middle", "end"):
        result = results[name]
        assert result.pieces > 3 and "overlapping chunks" in result.split, result
        assert result.categories == ["S9"] and result.unsafe_score > 0.5, (name, result)
        assert result.category_scores["S9"] == max(result.category_scores.values())
    safe = results["none"]
    assert safe.pieces > 3 and safe.unsafe_score < 0.5 and safe.categories == []


def test_earlier_turns_are_context_windows_beside_the_whole_judged_turn(runner):
    history = [user(SENTENCE), agent(SENTENCE), user(SENTENCE), agent("Sure.")]
    unsafe, safe = runner.classify([
        LlamaGuardRequest(conversation=[*history, user(HAZARD)]),
        LlamaGuardRequest(conversation=[*history, user("and the weather tomorrow?")])])
    assert unsafe.pieces > 1 and "4 earlier turns in" in unsafe.split and "context windows" in unsafe.split
    assert unsafe.categories == ["S9"] and unsafe.unsafe_score > 0.5
    assert safe.pieces == unsafe.pieces and safe.unsafe_score < 0.5


def test_refuse_is_a_typed_error_and_the_other_requests_still_answer(runner):
    refused, answered = runner.classify_each([
        LlamaGuardRequest(conversation=[user(FILLER + HAZARD)], overflow="refuse"),
        LlamaGuardRequest(conversation=[user(HAZARD)], overflow="refuse")])
    assert isinstance(refused, ContextOverflow) and refused.kind == "context_length_exceeded"
    assert "too long" in refused.message and f"reads at most {SHORT_CONTEXT}" in refused.message
    assert answered.pieces == 1 and answered.split is None and answered.categories == ["S9"]
