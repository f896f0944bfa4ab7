"""guard.messages: tool calls become the text the tool reads, and are never dropped."""

from __future__ import annotations

import json

from guard.messages import parse_messages


def call(name: str, arguments: str) -> dict:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_tool_call_arguments_are_read_decoded_from_json():
    arguments = json.dumps({"q": "zorblax", "opts": {"n": 3, "tags": ["a", None]}})
    escaped = '{"q": "\\u007a\\u006frblax"}'  # JSON escapes: the tool receives "zorblax"
    [message] = parse_messages([{"role": "assistant", "content": None,
                                 "tool_calls": [call("search", arguments), call("find", escaped)]}])
    assert message.text == "search(q: zorblax, opts: (n: 3, tags: [a, null]))\nfind(q: zorblax)"


def test_arguments_that_are_not_json_are_kept_as_sent():
    for arguments in ("not json", "[" * 5000 + "]" * 5000, '"\\ud800"'):
        [message] = parse_messages([{"role": "assistant", "content": None, "tool_calls": [call("f", arguments)]}])
        assert message.text == f"f({arguments})"


def test_tool_calls_beside_content_are_judged_too():
    [text, parts] = parse_messages([
        {"role": "assistant", "content": "Searching.", "tool_calls": [call("search", '{"q": "zorblax"}')]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}], "tool_calls": [call("f", "{}")]},
    ])
    assert text.text == "Searching.\nsearch(q: zorblax)"
    assert parts.parts == ["ok", "f()"]
