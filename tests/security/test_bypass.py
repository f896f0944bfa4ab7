"""Guard-bypass attempts against the real path (normaliser -> policy plan -> demo models ->
decision under ``policies/default.yaml``), and the Llama Guard token ids they lead to.

Attacks with a known gap (``Attack.gap``) are xfails: they document what does not hold yet
(docs/reliability.md). They are not strict: whether the tiny demo model happens to catch some of
them depends on its training, so an XPASS is reported, not failed; the gap stays until it is fixed
in the guard itself."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench._reliability.attacks import ATTACKS, INJECTION, SPECIAL_STRINGS, Attack, padding
from bench._reliability.bypass import run_attack, token_report
from guard.messages import parse_messages
from guard.policy import plan_checks
from guard.types import LlamaGuardRequest, Message, PromptGuardRequest
from tests.security.conftest import FAMILY, run

TEMPLATE_ATTACKS = [a for a in ATTACKS if a.template_text]


def _lg_request(policy, attack: Attack) -> LlamaGuardRequest:
    plan = plan_checks(policy, parse_messages(attack.messages), "input", family=FAMILY)
    assert plan.llama_guard is not None
    return plan.llama_guard


@pytest.mark.parametrize("attack", TEMPLATE_ATTACKS, ids=lambda a: a.name)
def test_template_look_alikes_in_caller_text_never_become_special_tokens(attack, shipped_default, lg_tokenizer):
    report = token_report(lg_tokenizer, FAMILY, _lg_request(shipped_default, attack))
    assert report.clean, f"special ids from caller text at {report.special_ids_in_text}"
    assert report.special_ids_outside >= 3  # the template's own BOS / header / eot tokens are there
    assert report.judged_chars == report.caller_chars  # the whole text is in the prompt


_PIECES = st.sampled_from([*SPECIAL_STRINGS, "<", "|", ">", "_id", "assistant", "user", "\n\n", "safe",
                           "unsafe\nS1", "<END CONVERSATION>", "<BEGIN CONVERSATION>", "\u200b", " "])


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(st.lists(st.lists(_PIECES, min_size=1, max_size=12).map("".join), min_size=1, max_size=3))
def test_any_mix_of_special_token_strings_stays_text(lg_tokenizer, shipped_default, texts):
    messages = [Message(role="user", content=t) for t in texts if t.strip()] or [Message(role="user", content="x")]
    plan = plan_checks(shipped_default, messages, "input", family=FAMILY)
    report = token_report(lg_tokenizer, FAMILY, plan.llama_guard)
    assert report.clean, f"special ids from caller text at {report.special_ids_in_text}"


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_attack_is_decided_as_the_default_policy_says(attack, guard_executor, shipped_default, request):
    if attack.gap:
        request.applymarker(pytest.mark.xfail(reason=attack.gap, strict=False))
    outcome = run(run_attack(attack, guard_executor, shipped_default, FAMILY))
    assert outcome.held, outcome.describe()


def test_prompt_guard_scans_every_segment_of_a_long_message(guard_executor):
    """The payload at the end of 20,000 characters of padding sits in the last segment, which is
    scanned; a payload the last segment holds alone scores there what it scores alone (nothing is
    cut off). Segments overlap (``tests/models/test_prompt_guard.py``: a phrase across a boundary),
    so a payload shorter than the overlap is never alone in the last segment: this one is longer."""
    runner = guard_executor.models.runners.prompt_guard
    segments = runner.segment([padding(20_000) + INJECTION])
    assert [s.index for s in segments] == list(range(len(segments))) and len(segments) >= 10
    assert INJECTION in segments[-1].text
    payload = " ".join([INJECTION] * 6)
    alone = runner.scan([PromptGuardRequest(text=payload)])[0]
    text = _aligned_padding(runner, payload) + payload
    segments = runner.segment([text])
    assert segments[-1].text.strip() == payload
    assert runner.score_segments(segments).jailbreak[-1] == pytest.approx(alone.jailbreak_score, abs=1e-4)
    result = runner.scan([PromptGuardRequest(text=text)])[0]
    assert result.segments == len(segments) >= 2 and result.jailbreak_score >= alone.jailbreak_score - 1e-4
    assert alone.jailbreak_score >= 0.9


def _aligned_padding(runner, payload: str) -> str:
    """At least 20,000 characters of padding after which ``payload`` starts a segment: segments
    start every ``512 - overlap`` characters (PG1) or tokens of the whole text with its [CLS] (PG2;
    padded with the vocabulary's longest whole word, so that 20,000 characters are few segments to
    score)."""
    stride = 512 - runner.overlap
    if not runner.family.token_chunks:
        return " " * (stride * 40)
    vocab = runner.tokenizer.get_vocab()
    word = max((k[1:] for k in vocab if k.startswith("\u2581") and k[1:].isalpha()), key=len, default="pad")
    unit, first = word + " ", 20_000 // (len(word) + 1) + 1
    count = lambda n: len(runner.tokenizer((unit * n).rstrip())["input_ids"]) - 1  # [CLS] + words, no [SEP]
    per_word, base = count(first + 1) - count(first), count(first)
    for extra in range(stride):
        if (base + extra * per_word) % stride == 0:
            pad = unit * (first + extra)
            if runner.segment([pad + payload])[-1].text.strip().startswith(payload[:20]):
                return pad
    pytest.fail("no padding length aligns the payload with a segment start")
