"""Split texts into the segments each Prompt Guard generation's reference helper scores.

* Prompt Guard 1 (``prompt_guard_1_inference.py``): 512-**character** chunks ``text[i:i+512]``; each
  chunk is whitespace-preprocessed (on by default), then tokenized with truncation at 512 tokens.
* Prompt Guard 2 (cookbook ``inference.py``): the whole text is tokenized (special tokens included,
  no truncation), the ids are cut into 512-**token** chunks, each chunk is decoded with
  ``skip_special_tokens=True`` and re-tokenized with truncation at 512 tokens. (So a full chunk
  loses its last two text tokens to the re-added [CLS]/[SEP]: that is what the reference scores.)

Every segment keeps the model input ids (what the reference feeds the model, without padding) and
the piece of the original text it covers, for reporting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guard.models.prompt_guard.preprocess import TokenStrings, preprocess_pg1

MAX_CHARS = 512
MAX_TOKENS = 512


@dataclass(frozen=True)
class Segment:
    """One chunk of one request's text."""

    request: int
    index: int
    text: str
    input_ids: list[int]


def char_segments(texts: Sequence[str], tokenizer: Any, *, preprocess: bool = True,
                  token_strings: TokenStrings | None = None) -> list[Segment]:
    """PG1 segments: 512-character chunks, optionally preprocessed, tokenized at most 512 tokens."""
    places: list[tuple[int, int, str]] = []
    for request, text in enumerate(texts):
        chunks = [text[i:i + MAX_CHARS] for i in range(0, len(text), MAX_CHARS)]
        places.extend((request, index, chunk) for index, chunk in enumerate(chunks))
    if not places:
        return []
    strings = token_strings or TokenStrings(tokenizer)
    chunks = [chunk for _, _, chunk in places]
    model_texts = [preprocess_pg1(chunk, tokenizer, strings) for chunk in chunks] if preprocess else chunks
    ids = _encode(tokenizer, model_texts)
    return [Segment(r, i, chunk, seg_ids) for (r, i, chunk), seg_ids in zip(places, ids, strict=True)]


def token_segments(texts: Sequence[str], tokenizer: Any) -> list[Segment]:
    """PG2 segments: 512-token chunks of the whole text, decoded and re-tokenized."""
    if not texts:
        return []
    fast = bool(getattr(tokenizer, "is_fast", False))
    whole = tokenizer(list(texts), truncation=False, return_offsets_mapping=fast,
                      return_special_tokens_mask=fast, verbose=False)
    places: list[tuple[int, int, list[int], str | None]] = []
    for request, text in enumerate(texts):
        ids = whole["input_ids"][request]
        for index, start in enumerate(range(0, len(ids), MAX_TOKENS)):
            chunk = ids[start:start + MAX_TOKENS]
            span = _original_span(text, whole, request, start, len(chunk)) if fast else None
            places.append((request, index, chunk, span))
    decoded = tokenizer.batch_decode([chunk for _, _, chunk, _ in places], skip_special_tokens=True)
    ids = _encode(tokenizer, decoded)
    return [Segment(r, i, span if span is not None else text, seg_ids)
            for (r, i, _, span), text, seg_ids in zip(places, decoded, ids, strict=True)]


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Reference tokenization of each segment (truncation at 512), without padding."""
    return tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]


def _original_span(text: str, encoding: Any, request: int, start: int, length: int) -> str:
    """The piece of ``text`` covered by the non-special tokens ``start:start+length``."""
    offsets = encoding["offset_mapping"][request][start:start + length]
    special = encoding["special_tokens_mask"][request][start:start + length]
    spans = [span for span, is_special in zip(offsets, special, strict=True) if not is_special]
    if not spans:
        return ""
    return text[spans[0][0]:spans[-1][1]]
