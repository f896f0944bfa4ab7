"""plan_checks: the Llama Guard window, Prompt Guard sources, categories and timeouts."""

from __future__ import annotations

import pytest

from guard.errors import BadInput
from guard.policy import plan_checks
from guard.taxonomy import default_categories
from guard.types import Message

from tests.policy.helpers import pg, policy


def m(role: str, text: str, name: str | None = None) -> Message:
    return Message(role=role, content=text, name=name)


CHAT = [
    m("system", "You are helpful."),            # 0
    m("user", "u1"), m("assistant", "a1"),       # 1, 2
    m("user", "u2"), m("assistant", "a2"),       # 3, 4
    m("user", "u3"), m("assistant", "a3"),       # 5, 6
    m("user", "u4"),                             # 7
]


@pytest.mark.parametrize("turns,expected", [
    (0, [7]), (1, [5, 6, 7]), (2, [3, 4, 5, 6, 7]), (None, [1, 2, 3, 4, 5, 6, 7]), (10, [1, 2, 3, 4, 5, 6, 7]),
])
def test_the_input_window_is_the_current_turn_plus_past_turns(turns, expected):
    plan = plan_checks(policy(context={"turns": turns}, judged_text={"system": "trusted"}), CHAT, "input")
    assert plan.llama_guard_messages == expected
    assert [x.text for x in plan.llama_guard.conversation] == [CHAT[i].text for i in expected]


def test_a_caller_written_system_message_is_judged_as_user_text_unless_trusted():
    judged = plan_checks(policy(context={"turns": None}), CHAT, "input")
    assert judged.llama_guard_messages == list(range(8))
    assert [(x.role, x.text) for x in judged.llama_guard.conversation[:2]] == [("user", "You are helpful."),
                                                                                ("user", "u1")]
    assert (0, "user") in [(s.message_index, s.request.source) for s in judged.prompt_guard]
    trusted = plan_checks(policy(context={"turns": None}, judged_text={"system": "trusted"}), CHAT, "input")
    assert 0 not in trusted.llama_guard_messages and 0 not in [s.message_index for s in trusted.prompt_guard]


def test_the_output_window_ends_with_the_reply():
    convo = [*CHAT, m("assistant", "a4")]
    plan = plan_checks(policy(context={"turns": 0}), convo, "output")
    assert plan.llama_guard_messages == [7, 8]
    assert plan.prompt_guard == []  # Prompt Guard is input only


def test_an_output_check_needs_the_reply_last():
    with pytest.raises(BadInput, match="assistant reply"):
        plan_checks(policy(), CHAT, "output")


def test_the_input_window_ends_at_the_last_user_message_and_keeps_chosen_roles():
    agent = [m("user", "find x"), m("assistant", "calling"), m("tool", "result"), m("user", "thanks"),
             m("assistant", "call 2"), m("tool", "result 2")]
    plain = plan_checks(policy(context={"turns": 1}), agent, "input")
    assert plain.llama_guard_messages == [0, 1, 3]
    with_tools = plan_checks(policy(context={"turns": 1, "roles": ["user", "assistant", "tool"]}), agent, "input")
    assert with_tools.llama_guard_messages == [0, 1, 2, 3]


def test_no_user_message_means_no_llama_guard_request():
    plan = plan_checks(policy(judged_text={"system": "trusted"}), [m("system", "s"), m("tool", "t")], "input")
    assert plan.llama_guard is None and plan.llama_guard_messages == [] and plan.llama_guard_extra == []
    assert [s.message_index for s in plan.prompt_guard] == [1]


def test_sources_follow_roles_and_the_document_name_convention():
    convo = [m("system", "system prompt"), m("system", "retrieved page", name="document:kb-42"),
             m("user", "question"), m("assistant", "calling"), m("tool", "tool output"),
             m("user", "pasted", name="document"), m("user", "   ")]
    plan = plan_checks(policy(judged_text={"system": "trusted"}), convo, "input")
    got = [(s.message_index, s.request.source, s.request.text) for s in plan.prompt_guard]
    assert got == [(1, "document", "retrieved page"), (2, "user", "question"), (4, "tool", "tool output"),
                   (5, "document", "pasted")]
    judged = plan_checks(policy(), convo, "input")  # a system prompt the caller wrote is user text
    assert [(s.message_index, s.request.source) for s in judged.prompt_guard][:2] == [(0, "user"), (1, "document")]


def test_sources_without_thresholds_are_not_scanned_and_the_scope_limits_messages():
    convo = [m("user", "old"), m("assistant", "a"), m("tool", "old tool"), m("user", "new"), m("tool", "new tool")]
    no_user = policy(prompt_injection={"user": {"jailbreak": None}})
    assert [s.message_index for s in plan_checks(no_user, convo, "input").prompt_guard] == [2, 4]
    latest = policy(prompt_injection={"scope": "latest_turn"})
    assert [s.message_index for s in plan_checks(latest, convo, "input").prompt_guard] == [3, 4]
    window = policy(prompt_injection={"scope": "window"}, context={"turns": 0})
    assert [s.message_index for s in plan_checks(window, convo, "input").prompt_guard] == [3, 4]


def test_disabled_guards_plan_nothing_and_timeouts_models_come_from_the_policy():
    p = policy(guards={"llama_guard": {"enabled": False, "timeout_ms": 1500},
                       "prompt_guard": {"timeout_ms": 250, "model": "meta-llama/Llama-Prompt-Guard-2-22M"}})
    plan = plan_checks(p, [m("user", "hi")], "input")
    assert plan.llama_guard is None
    assert plan.timeouts == {"llama_guard": 1.5, "prompt_guard": 0.25}
    assert plan.models == {"llama_guard": None, "prompt_guard": "meta-llama/Llama-Prompt-Guard-2-22M"}
    off = policy(guards={"llama_guard": {"directions": ["input"]}, "prompt_guard": {"enabled": False}})
    assert plan_checks(off, [m("user", "hi"), m("assistant", "yo")], "output").empty


def test_categories_default_to_the_models_list_and_custom_ones_extend_it():
    plain = plan_checks(policy(excluded_categories=["S6", "S14"]), [m("user", "hi")], "input",
                        family="llama-guard-3-1b").llama_guard
    assert plain.categories is None
    assert plain.excluded == ["S6"]  # the 1B model has no S14: dropping it is not an error
    custom = policy(custom_categories={"C1": {"name": "Account Takeover", "description": "Stealing logins."}},
                    excluded_categories=["S2"])
    request = plan_checks(custom, [m("user", "hi")], "input", family="llama-guard-3-1b").llama_guard
    assert request.categories == {**default_categories("llama-guard-3-1b"),
                                  "C1": "Account Takeover.\nStealing logins."}
    assert request.excluded == ["S2"]
    only = policy(custom_categories={"C1": {"name": "Account Takeover"}}, default_categories=False)
    assert plan_checks(only, [m("user", "hi")], "input").llama_guard.categories == {"C1": "Account Takeover."}


def test_with_indices_stamps_prompt_guard_results_in_plan_order():
    convo = [m("user", "a"), m("assistant", "b"), m("tool", "c")]
    plan = plan_checks(policy(), convo, "input")
    stamped = plan.with_indices([pg(0.1), pg(0.2, source="tool")])
    assert [r.message_index for r in stamped] == [0, 2]
    with pytest.raises(ValueError):
        plan.with_indices([pg(0.1)])
