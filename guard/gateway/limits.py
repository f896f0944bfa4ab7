"""Request limits: body size (an ASGI middleware, before anything is parsed), message count and
message length (after parsing). Each violation is a 4xx in OpenAI's error shape."""

from __future__ import annotations

from collections.abc import Sequence

from guard.errors import BadInput
from guard.gateway.errors import PayloadTooLarge
from guard.types import Message


def check_messages(messages: Sequence[Message], *, max_messages: int, max_chars: int) -> None:
    if len(messages) > max_messages:
        raise BadInput(f"too many messages: {len(messages)} (the limit is {max_messages})", param="messages")
    for index, message in enumerate(messages):
        size = len(message.text)
        if size > max_chars:
            raise BadInput(
                f"messages[{index}] has {size} characters (the limit is {max_chars})",
                param=f"messages[{index}].content",
            )


def check_texts(texts: Sequence[str], *, max_items: int, max_chars: int, param: str = "input") -> None:
    if len(texts) > max_items:
        raise BadInput(f"too many inputs: {len(texts)} (the limit is {max_items})", param=param)
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            raise BadInput(
                f"{param}[{index}] has {len(text)} characters (the limit is {max_chars})",
                param=f"{param}[{index}]",
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            # A lone surrogate ("\ud800" in JSON): no tokenizer takes it, and it would fail the
            # whole model batch, other callers' texts included.
            raise BadInput(
                f"{param}[{index}] is not valid Unicode text (a lone surrogate at character {exc.start})",
                param=f"{param}[{index}]",
            ) from None


def body_too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body of {size} bytes or more is over the limit of {limit} bytes")
