"""Small input helpers shared by commands."""

from __future__ import annotations

import sys

from guard.errors import BadInput


def read_stdin_text() -> str:
    """All of stdin as UTF-8 text; undecodable bytes are bad input, not a traceback."""
    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"stdin is not UTF-8 (byte {exc.start})") from None
