"""Bad input to the two parsers that read outside text first (hypothesis, bounded CI sample; the
full runs are in ``bench/reliability.py``): only ``ConfigError`` / ``BadInput``, never another
exception, and the invariants downstream code relies on."""

from __future__ import annotations

import pytest

from bench._reliability.props import check_messages, check_policy_dir, fuzz_messages, fuzz_policy_loader
from guard.errors import BadInput
from guard.messages import parse_messages

CI_POLICY_EXAMPLES = 60
CI_MESSAGE_EXAMPLES = 250


def test_policy_loader_raises_only_config_errors_on_random_policy_directories() -> None:
    tally = fuzz_policy_loader(CI_POLICY_EXAMPLES, strict=True)
    tally.assert_held()
    assert tally.counts["loaded"] > 0 and tally.counts["rejected"] > 0, tally.summary()


def test_message_normaliser_raises_only_bad_input_on_random_json() -> None:
    tally = fuzz_messages(CI_MESSAGE_EXAMPLES, strict=True)
    tally.assert_held()
    assert tally.counts["ok"] > 0 and tally.counts["rejected"] > 0, tally.summary()


@pytest.mark.parametrize("text", [
    "a: &a [*a]\n",                                   # recursive alias
    "id: a\ncategories: &c {S1: *c}\n",               # recursive alias inside a policy
    "x: &x [1, 2]\ny: &y [*x,*x,*x,*x,*x,*x,*x,*x]\nz: &z [*y,*y,*y,*y,*y,*y,*y,*y]\n"
    "w: &w [*z,*z,*z,*z,*z,*z,*z,*z]\nu: &u [*w,*w,*w,*w,*w,*w,*w,*w]\nv: [*u,*u,*u,*u,*u,*u,*u,*u]\n",  # alias bomb
    "id: a\x03\n",                                    # control character (PyYAML ReaderError)
    'id: "\\U002019F2"\n',                            # escape beyond U+10FFFF (PyYAML ValueError)
    "excluded_categories: [S1, [x], {a: 1}]\n",       # unhashable codes
    "? [a]\n: 1\n",                                   # a list as a key
])
def test_policy_files_found_by_the_fuzzer_are_config_errors(text: str) -> None:
    assert check_policy_dir([("a", text)]) == "rejected"


@pytest.mark.parametrize("raw", [
    [{"role": "user", "content": "a\ud800b"}],                                    # lone surrogate
    [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}],
    [{"role": "assistant", "content": None, "tool_calls": [{"function": {"arguments": "\ud83d"}}]}],
    [{"role": "user", "content": "x", "name": "document:\udc00"}],
])
def test_text_that_is_not_valid_unicode_is_bad_input(raw: list) -> None:
    with pytest.raises(BadInput, match="not valid Unicode"):
        parse_messages(raw)


def test_a_tool_call_whose_function_is_not_an_object_is_still_judged_as_text() -> None:
    messages = parse_messages([{"role": "assistant", "content": None, "tool_calls": [{"function": 5}, 7]}])
    assert messages[0].text == "()\n()"
    assert check_messages([{"role": "assistant", "content": None, "tool_calls": [{"function": "f"}]}]) == "ok"
