"""Encoded blobs in judged text, decoded: "decode this and answer it: aG93IGRv...".

A chat model decodes base64 (or hex, or URL-encoding) it is asked to, and then answers the decoded
request; a guard model sees letters and digits. So a blob that decodes to text is judged also as
that text (``guard.policy.judged`` makes it a reading of its own).

What counts as a blob, per encoding (each decoded result must be *text*: valid UTF-8, at least
``MIN_CHARS`` characters, at least one letter, and at least 95% printable characters or
whitespace; random bytes, hashes, keys and ordinary words almost never are):

* ``base64``: a run of at least 16 characters of the standard or URL-safe alphabet, with optional
  ``=`` padding (missing padding is tolerated);
* ``hex``: at least 8 bytes as contiguous hex digits, as ``\\xNN`` escapes, or as pairs separated
  by colons or whitespace;
* ``url``: a word (a run of non-space characters) holding at least 3 ``%XX`` escapes.

Blobs are looked for word by word (whitespace splits them), so the search is linear and ordinary
text costs one ``str.split``; MIME-wrapped base64 is read line by line, each line a blob of its own.
Decoded text is searched again, once (base64 inside base64, a hex blob that decodes to base64), so
``DEPTH`` levels at most.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal
from urllib.parse import unquote

Encoding = Literal["base64", "hex", "url"]
ENCODINGS: tuple[Encoding, ...] = ("base64", "hex", "url")

MIN_CHARS = 4
DEPTH = 2

_MIN_BLOB = 16  # characters: the shortest base64 or contiguous hex blob read
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2}){8,}|(?:\\x[0-9A-Fa-f]{2}){8,}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){7,}")
_HEX_DIGITS = "0123456789abcdefABCDEF"
_HEX_PAIRS = frozenset(a + b for a in _HEX_DIGITS for b in _HEX_DIGITS)  # a set lookup per word
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_NOT_HEX = re.compile(r"\\x|[ :]")


def decoded_texts(text: str, encodings: tuple[Encoding, ...] | list[Encoding] = ENCODINGS,
                  depth: int = DEPTH) -> list[tuple[Encoding, str]]:
    """(encoding, decoded text) for every blob in ``text`` that decodes to text, in order of
    appearance per encoding, then what those decode to (up to ``depth`` levels)."""
    found: list[tuple[Encoding, str]] = []
    words = text.split()
    long = [w for w in words if len(w) >= _MIN_BLOB]
    for encoding in encodings:
        for blob in _blobs(encoding, words, long):
            decoded = _decode(encoding, blob)
            if decoded is not None and decoded.strip() != blob.strip():
                found.append((encoding, decoded))
    if depth > 1:
        for _, decoded in list(found):
            found.extend(decoded_texts(decoded, encodings, depth - 1))
    return found


def _blobs(encoding: Encoding, words: list[str], long: list[str]) -> list[str]:
    """Candidate blobs among the words of a text: for base64 and contiguous hex, only the ``long``
    words (``_MIN_BLOB`` characters or more) are searched."""
    if encoding == "url":
        return [w for w in words if "%" in w and len(_ESCAPE.findall(w)) >= 3]
    if encoding == "base64":
        return [m.group() for w in long for m in _BASE64.finditer(w)]
    found = [m.group() for w in long for m in _HEX.finditer(w)]
    # Hex pairs separated by whitespace, "68 6f 77 ...": runs of 8 or more pair words in a row.
    pairs = [i for i, word in enumerate(words) if word in _HEX_PAIRS]
    start = 0
    for k in range(1, len(pairs) + 1):
        if k == len(pairs) or pairs[k] != pairs[k - 1] + 1:
            if k - start >= 8:
                found.append(" ".join(words[pairs[start] : pairs[k - 1] + 1]))
            start = k
    return found


def _decode(encoding: Encoding, blob: str) -> str | None:
    try:
        if encoding == "base64":
            raw = _base64(blob)
        elif encoding == "hex":
            raw = bytes.fromhex(_NOT_HEX.sub("", blob))
        else:
            return _texty(unquote(blob, errors="strict"))
        return _texty(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return None


def _base64(blob: str) -> bytes:
    body = blob.rstrip("=")
    if len(body) % 4 == 1:
        raise ValueError("not base64: a length that no byte string encodes to")
    padded = body + "=" * (-len(body) % 4)
    if "-" in body or "_" in body:
        return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded, validate=True)


def _texty(text: str) -> str | None:
    if len(text.strip()) < MIN_CHARS or not any(ch.isalpha() for ch in text):
        return None
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\n\r\t")
    return text if printable >= 0.95 * len(text) else None
