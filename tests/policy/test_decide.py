"""The decision engine: actions, thresholds, severity, shadow, on_error, overrides, injection."""

from __future__ import annotations

import pytest

from guard.policy import decide
from guard.types import Action

from tests.policy.helpers import lg, pg, policy, results

ACTIONS = list(Action)


@pytest.mark.parametrize("action", ACTIONS, ids=[a.value for a in ACTIONS])
def test_each_action_is_the_decision_when_its_category_crosses(action):
    p = policy(categories={"S9": {"action": action.value, "threshold": 0.5}})
    d = decide(p, "input", results(lg({"S9": 0.9})))
    assert d.action is action and d.effective_action is action
    assert [(r.kind, r.code, r.action) for r in d.reasons] == [("category", "S9", action)]
    assert d.reasons[0].score == 0.9 and d.reasons[0].threshold == 0.5


def test_nothing_crossed_is_allow_without_reasons():
    d = decide(policy(categories={"S1": {"action": "block"}}), "input", results(lg({"S1": 0.2})))
    assert d.action is Action.ALLOW and d.reasons == [] and d.user_message is None


@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5, 0.7, 1.0])
def test_a_score_exactly_at_the_threshold_crosses(threshold):
    p = policy(categories={"S1": {"action": "block", "threshold": threshold}})
    assert decide(p, "input", results(lg({"S1": threshold}))).action is Action.BLOCK


def test_a_score_just_below_the_threshold_does_not_cross():
    p = policy(categories={"S1": {"action": "block", "threshold": 0.5}})
    assert decide(p, "input", results(lg({"S1": 0.4999999}))).action is Action.ALLOW


def test_a_code_listed_in_the_output_crosses_on_the_unsafe_score():
    p = policy(categories={"S9": {"action": "block", "threshold": 0.5}})
    at = decide(p, "input", results(lg({}, listed=["S9"], unsafe=0.5)))
    assert at.action is Action.BLOCK
    assert at.reasons[0].score == 0.5 and "unsafe score" in at.reasons[0].detail
    below = decide(p, "input", results(lg({}, listed=["S9"], unsafe=0.49)))
    assert below.action is Action.ALLOW


@pytest.mark.parametrize("stronger,weaker", [
    (Action.BLOCK, Action.ESCALATE), (Action.ESCALATE, Action.REDACT),
    (Action.REDACT, Action.FLAG), (Action.FLAG, Action.ALLOW), (Action.BLOCK, Action.ALLOW),
])
def test_the_most_severe_action_wins(stronger, weaker):
    p = policy(categories={"S1": {"action": weaker.value}, "S2": {"action": stronger.value}})
    d = decide(p, "output", results(lg({"S1": 0.9, "S2": 0.8})))
    assert d.action is stronger
    assert {r.code: r.action for r in d.reasons} == {"S1": weaker, "S2": stronger}


def test_unlisted_categories_use_other_categories_and_excluded_ones_are_never_judged():
    p = policy(other_categories={"action": "escalate", "threshold": 0.6}, excluded_categories=["S5"])
    d = decide(p, "input", results(lg({"S5": 0.99, "S13": 0.6})))
    assert [(r.code, r.action) for r in d.reasons] == [("S13", Action.ESCALATE)]


def test_per_direction_overrides_change_action_threshold_and_message():
    p = policy(categories={"S6": {"action": "flag", "threshold": 0.7, "message": "careful",
                                  "output": {"action": "block", "threshold": 0.4, "message": "no advice"}}})
    scores = results(lg({"S6": 0.5}))
    assert decide(p, "input", scores).action is Action.ALLOW  # 0.5 < 0.7 on input
    out = decide(p, "output", scores)
    assert out.action is Action.BLOCK and out.reasons[0].threshold == 0.4
    assert out.user_message == "no advice"
    inp = decide(p, "input", results(lg({"S6": 0.8})))
    assert inp.action is Action.FLAG and inp.user_message == "careful"


def test_an_input_only_action_needs_no_top_level_action():
    p = policy(categories={"S2": {"input": {"action": "block"}, "output": {"action": "redact"}}})
    assert decide(p, "input", results(lg({"S2": 0.9}))).action is Action.BLOCK
    assert decide(p, "output", results(lg({"S2": 0.9}))).action is Action.REDACT


def test_shadow_mode_reports_the_action_but_lets_everything_through():
    p = policy(mode="shadow", categories={"S9": {"action": "block", "message": "no"}})
    d = decide(p, "input", results(lg({"S9": 0.95})))
    assert d.shadow is True
    assert d.action is Action.BLOCK and d.effective_action is Action.ALLOW
    assert d.user_message is None
    assert d.reasons[0].code == "S9"


def test_enforce_mode_is_not_shadow():
    d = decide(policy(categories={"S9": {"action": "block"}}), "input", results(lg({"S9": 0.95})))
    assert d.shadow is False and d.effective_action is Action.BLOCK


def test_a_failed_guard_fails_closed_by_default():
    d = decide(policy(), "input", results(errors={"llama_guard": "model_unavailable: worker down"}))
    assert d.action is Action.BLOCK and d.effective_action is Action.BLOCK
    assert d.guard_status == "guard_error"
    assert [(r.kind, r.action) for r in d.reasons] == [("guard_error", Action.BLOCK)]
    assert "worker down" in d.reasons[0].detail
    assert d.user_message == "Sorry, I can't help with that."


def test_a_fail_open_guard_allows_but_records_the_error():
    p = policy(guards={"llama_guard": {"on_error": "allow"}})
    d = decide(p, "input", results(timeouts=["llama_guard"]))
    assert d.action is Action.ALLOW
    assert d.guard_status == "timeout"
    assert [(r.kind, r.action) for r in d.reasons] == [("guard_error", Action.ALLOW)]
    assert "timed out" in d.reasons[0].detail


def test_on_error_is_per_direction():
    p = policy(guards={"prompt_guard": {"on_error": {"input": "flag"}},
                       "llama_guard": {"on_error": {"input": "allow", "output": "block"}}})
    failed = results(errors={"llama_guard": "boom"})
    assert decide(p, "input", failed).action is Action.ALLOW
    assert decide(p, "output", failed).action is Action.BLOCK
    assert decide(p, "input", results(timeouts=["prompt_guard"])).action is Action.FLAG


def test_a_guard_error_still_judges_the_results_that_did_arrive():
    p = policy(guards={"prompt_guard": {"on_error": "allow"}}, categories={"S1": {"action": "redact"}})
    d = decide(p, "input", results(lg({"S1": 0.9}), errors={"prompt_guard": "boom"}))
    assert d.action is Action.REDACT
    assert {r.kind for r in d.reasons} == {"guard_error", "category"}


def test_errors_of_a_guard_the_policy_does_not_apply_are_ignored():
    p = policy(guards={"llama_guard": {"directions": ["input"]}, "prompt_guard": {"enabled": False}})
    d = decide(p, "output", results(errors={"llama_guard": "boom", "prompt_guard": "boom"}))
    assert d.action is Action.ALLOW and d.guard_status == "ok" and d.reasons == []


def test_an_unknown_guard_failing_fails_closed():
    d = decide(policy(guards={"llama_guard": {"on_error": "allow"}}), "input",
               results(errors={"code_shield": "boom"}))
    assert d.action is Action.BLOCK


def test_injection_thresholds_apply_per_source_with_per_source_actions():
    p = policy(prompt_injection={
        "action": "block",
        "user": {"jailbreak": 0.9, "injection": None, "action": "flag"},
        "tool": {"jailbreak": 0.9, "injection": 0.5},
        "document": {"jailbreak": None, "injection": None},
    })
    d = decide(p, "input", results(prompts=[
        pg(0.95, 0.95, source="user", index=1),   # jailbreak crosses -> flag (injection off for user)
        pg(0.1, 0.5, source="tool", index=3),     # injection exactly at 0.5 -> block
        pg(0.99, 0.99, source="document", index=4),  # document scanning off
    ]))
    assert d.action is Action.BLOCK
    got = [(r.kind, r.source, r.message_index, r.action) for r in d.reasons]
    assert got == [("jailbreak", "user", 1, Action.FLAG), ("injection", "tool", 3, Action.BLOCK)]


def test_prompt_guard_results_are_not_judged_on_output():
    d = decide(policy(), "output", results(prompts=[pg(0.99, source="tool")]))
    assert d.action is Action.ALLOW


def test_crossings_of_allow_rules_are_recorded():
    p = policy(categories={"S8": {"action": "allow", "threshold": 0.3}})
    d = decide(p, "output", results(lg({"S8": 0.9})))
    assert d.action is Action.ALLOW and [r.code for r in d.reasons] == ["S8"]


def test_the_decision_carries_the_policy_reference_and_a_block_the_refusal():
    p = policy(version="7", refusal="Nope.", categories={"S1": {"action": "block"}})
    d = decide(p, "input", results(lg({"S1": 1.0})))
    assert (d.policy.id, d.policy.version, d.policy.hash) == ("t", "7", p.content_hash)
    assert len(p.content_hash) == 64
    assert d.user_message == "Nope."
    assert d.direction == "input"


def test_custom_categories_are_judged_like_hazards():
    p = policy(custom_categories={"C1": {"name": "Account Takeover"}},
               categories={"C1": {"action": "escalate", "threshold": 0.4}})
    assert decide(p, "input", results(lg({"C1": 0.4}))).action is Action.ESCALATE
