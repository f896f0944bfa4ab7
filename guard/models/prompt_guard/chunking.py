"""Split texts into the segments each Prompt Guard generation's reference helper scores.

* Prompt Guard 1 (``prompt_guard_1_inference.py``): 512-**character** chunks ``text[i:i+512]``; each
  chunk is whitespace-preprocessed (on by default), then tokenized with truncation at 512 tokens.
* Prompt Guard 2 (cookbook ``inference.py``): the whole text is tokenized (special tokens included,
  no truncation), the ids are cut into 512-**token** chunks, each chunk is decoded with
  ``skip_special_tokens=True`` and re-tokenized with truncation at 512 tokens. (So a full chunk
  loses its last two text tokens to the re-added [CLS]/[SEP]: that is what the reference scores.)

Where we differ: consecutive segments **overlap** (``overlap``: PG1 in characters, default 128;
PG2 in tokens, default 64), so that a phrase that straddles a boundary, which the reference cuts
into two halves that may each look harmless, is whole in one segment (any phrase up to the overlap
long). A text that fits in one segment (512 characters / 512 tokens with [CLS] and [SEP]) is the
reference's single segment, scored exactly as the reference scores it; a longer text gets the
reference's first segment and then one segment every ``512 - overlap`` units instead of every 512
(about 14 % more segments for PG2 at the default, 33 % for PG1). The overlap also covers the text
tokens the reference's re-tokenization truncates off the end of a full PG2 chunk.

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
#: Default overlap of consecutive segments: PG1 in characters, PG2 in tokens.
CHAR_OVERLAP = 128
TOKEN_OVERLAP = 64
#: The largest overlap allowed: half a segment (every unit is then scanned at most twice).
MAX_OVERLAP = 256


@dataclass(frozen=True)
class Segment:
    """One chunk of one request's text."""

    request: int
    index: int
    text: str
    input_ids: list[int]


def segment_starts(length: int, size: int, overlap: int) -> list[int]:
    """Where the segments of a ``length``-unit sequence start: every ``size - overlap`` units until
    one reaches the end (none for an empty sequence, one when it fits in ``size``)."""
    if not 0 <= overlap <= min(MAX_OVERLAP, size // 2):
        raise ValueError(f"overlap must be between 0 and {min(MAX_OVERLAP, size // 2)} (got {overlap})")
    starts = [0] if length else []
    while starts and starts[-1] + size < length:
        starts.append(starts[-1] + size - overlap)
    return starts


def char_segments(texts: Sequence[str], tokenizer: Any, *, preprocess: bool = True,
                  token_strings: TokenStrings | None = None, overlap: int = CHAR_OVERLAP) -> list[Segment]:
    """PG1 segments: 512-character chunks overlapping by ``overlap`` characters, optionally
    preprocessed, tokenized at most 512 tokens."""
    places: list[tuple[int, int, str]] = []
    for request, text in enumerate(texts):
        chunks = [text[i:i + MAX_CHARS] for i in segment_starts(len(text), MAX_CHARS, overlap)]
        places.extend((request, index, chunk) for index, chunk in enumerate(chunks))
    if not places:
        return []
    strings = token_strings or TokenStrings(tokenizer)
    chunks = [chunk for _, _, chunk in places]
    model_texts = [preprocess_pg1(chunk, tokenizer, strings) for chunk in chunks] if preprocess else chunks
    ids = _encode(tokenizer, model_texts)
    return [Segment(r, i, chunk, seg_ids) for (r, i, chunk), seg_ids in zip(places, ids, strict=True)]


def token_segments(texts: Sequence[str], tokenizer: Any, *, overlap: int = TOKEN_OVERLAP) -> list[Segment]:
    """PG2 segments: 512-token chunks of the whole text overlapping by ``overlap`` tokens, decoded
    and re-tokenized."""
    if not texts:
        return []
    fast = bool(getattr(tokenizer, "is_fast", False))
    whole = tokenizer(list(texts), truncation=False, return_offsets_mapping=fast,
                      return_special_tokens_mask=fast, verbose=False)
    places: list[tuple[int, int, list[int], str | None]] = []
    for request, text in enumerate(texts):
        ids = whole["input_ids"][request]
        for index, start in enumerate(segment_starts(len(ids), MAX_TOKENS, overlap)):
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
