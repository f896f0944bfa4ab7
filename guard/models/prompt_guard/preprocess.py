"""Prompt Guard 1 whitespace preprocessing, as in Meta's reference helper.

Inserting spaces inside words ("i g n o r e  p r e v i o u s") breaks the tokens the classifier
learned, so Meta patched the PG1 helper (llama-recipes #636) to squeeze out all whitespace,
tokenize the squeezed text, and rebuild it token by token, putting back a single space before a
token only where the original character before that token's first character was whitespace.
Any failure (a token string that cannot be found in the squeezed text, ...) returns the original
text unchanged, exactly as the reference does.
"""

from __future__ import annotations

from typing import Any, Protocol


class _Tokenizer(Protocol):
    def tokenize(self, text: str) -> list[str]: ...

    def convert_tokens_to_string(self, tokens: list[str]) -> str: ...


class TokenStrings:
    """Memoised ``tokenizer.convert_tokens_to_string([token])``.

    The conversion of one token on its own is a pure function of the token, so caching it is exact;
    it saves a call into the tokenizer backend per token.
    """

    def __init__(self, tokenizer: _Tokenizer, max_entries: int = 300_000) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[str, str] = {}
        self._max_entries = max_entries

    def __call__(self, token: str) -> str:
        text = self._cache.get(token)
        if text is None:
            text = self._tokenizer.convert_tokens_to_string([token])
            if len(self._cache) < self._max_entries:
                self._cache[token] = text
        return text


def squeeze_whitespace(text: str) -> tuple[str, list[int]]:
    """Drop every whitespace character; return the squeezed text and, for each kept character,
    its index in ``text``."""
    kept = [(i, ch) for i, ch in enumerate(text) if not ch.isspace()]
    return "".join(ch for _, ch in kept), [i for i, _ in kept]


def preprocess_pg1(text: str, tokenizer: Any, token_strings: TokenStrings | None = None) -> str:
    """Return the text the PG1 reference helper feeds to the tokenizer."""
    to_string = token_strings or TokenStrings(tokenizer)
    try:
        return _rebuild(text, tokenizer, to_string)
    except Exception:  # noqa: BLE001 -- the reference falls back to the original text on any error
        return text


def _rebuild(text: str, tokenizer: Any, to_string: TokenStrings) -> str:
    squeezed, index_map = squeeze_whitespace(text)
    pieces: list[str] = []
    last_end = 0
    for token in tokenizer.tokenize(squeezed):
        token_str = to_string(token)
        start = squeezed.index(token_str, last_end)
        original_start = index_map[start]
        if original_start > 0 and text[original_start - 1].isspace():
            pieces.append(" ")
        pieces.append(token_str)
        last_end = start + len(token_str)
    return "".join(pieces)
