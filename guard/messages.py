"""Normalise OpenAI-style chat messages at the edge (CLI, HTTP) into ``guard.types.Message``.

Accepts string content or a list of ``{"type": "text", "text": ...}`` parts. An assistant message's
``tool_calls`` are turned into text (after its content, if it has any) so that tool-call arguments
are judged too: one line per call, ``name(key: value, ...)``, with the arguments decoded from JSON
(string values as the tool receives them: unquoted, escapes such as ``\u0041`` resolved), or the
arguments as sent when they are not JSON. Anything else is a ``BadInput`` with a message that names
the offending message.

Text must be valid Unicode: JSON may spell a lone UTF-16 surrogate (``"\\ud800"``), which no
tokenizer can encode; let through, it would fail the guard model's whole batch (other callers'
checks included) and, under a fail-open policy, pass unjudged. It is refused here.
"""

from __future__ import annotations

import json
from typing import Any

from guard.errors import BadInput
from guard.types import Message, TextPart

_ROLES = ("system", "user", "assistant", "tool")
_ROLE_ALIASES = {"developer": "system", "function": "tool"}


def parse_messages(raw: Any) -> list[Message]:
    """Validate and normalise a JSON value (a list of message objects)."""
    if not isinstance(raw, list):
        raise BadInput("messages must be a JSON array of message objects", param="messages")
    if not raw:
        raise BadInput("the conversation is empty", param="messages")
    return [_parse_message(i, item) for i, item in enumerate(raw)]


def parse_messages_json(text: str) -> list[Message]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return parse_messages(raw)


def _parse_message(index: int, item: Any) -> Message:
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise BadInput(f"{where} must be an object", param=where)
    role = item.get("role")
    role = _ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in _ROLES:
        raise BadInput(f"{where}.role must be one of {', '.join(_ROLES)} (got {item.get('role')!r})",
                       param=f"{where}.role")
    content = _parse_content(where, item.get("content"), item.get("tool_calls"))
    name = item.get("name")
    name = _valid_text(f"{where}.name", name) if isinstance(name, str) else None
    return Message(role=role, content=content, name=name)


def _valid_text(where: str, text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadInput(f"{where} is not valid Unicode text (a lone surrogate at character {exc.start})",
                       param=where) from None
    return text


def _parse_content(where: str, content: Any, tool_calls: Any) -> str | list[TextPart]:
    calls = _tool_calls_text(where, tool_calls) if tool_calls else None
    if isinstance(content, str):
        text = _valid_text(f"{where}.content", content)
        return f"{text}\n{calls}" if calls is not None and text.strip() else calls if calls is not None else text
    if content is None:
        if calls is not None:
            return calls
        raise BadInput(f"{where}.content is missing", param=f"{where}.content")
    if isinstance(content, list):
        parts = [_parse_part(f"{where}.content[{i}]", part) for i, part in enumerate(content)]
        return parts + [TextPart(text=calls)] if calls is not None else parts
    raise BadInput(f"{where}.content must be a string or a list of text parts", param=f"{where}.content")


def _parse_part(where: str, part: Any) -> TextPart:
    if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise BadInput(f"{where} must be a text part {{\"type\": \"text\", \"text\": ...}} (got {kind!r})",
                       param=where)
    return TextPart(text=_valid_text(f"{where}.text", part["text"]))


def _tool_calls_text(where: str, tool_calls: Any) -> str:
    if not isinstance(tool_calls, list):
        raise BadInput(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")
    lines = []
    for call in tool_calls:
        fn = call.get("function") if isinstance(call, dict) else None
        fn = fn if isinstance(fn, dict) else {}
        lines.append(f"{fn.get('name', '')}({_arguments_text(fn.get('arguments', ''))})")
    return _valid_text(f"{where}.tool_calls", "\n".join(lines))


def _arguments_text(arguments: Any) -> str:
    """Tool-call arguments as the tool reads them: JSON decoded, ``key: value`` pairs, strings
    unquoted; anything that is not a JSON text is kept as it is."""
    if not isinstance(arguments, str):
        return str(arguments)
    try:
        text = _json_text(json.loads(arguments), top=True)
        text.encode("utf-8")  # a JSON escape of a lone surrogate: keep the arguments as sent
        return text
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return arguments


def _json_text(value: Any, top: bool = False) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        pairs = ", ".join(f"{key}: {_json_text(item)}" for key, item in value.items())
        return pairs if top else f"({pairs})"
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(item) for item in value) + "]"
    return json.dumps(value)
