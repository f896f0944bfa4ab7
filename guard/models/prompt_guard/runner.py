"""Prompt Guard runner: segments every request, scores all segments in length-sorted batches, and
keeps the maximum per request, as Meta's reference helpers do, except that consecutive segments
of a long text overlap (``overlap``; see ``chunking``), so nothing is cut in two unseen.

Scores follow the reference helpers exactly: ``softmax(logits / temperature)`` per segment,
PG1 ``jailbreak = p[JAILBREAK]`` and ``injection = p[INJECTION] + p[JAILBREAK]``, PG2 both
``= p[MALICIOUS]``, each the maximum over the request's segments (0.0 for a text with no segment,
like the reference's initial value). What differs is only how the work is scheduled: segments of
all requests are pooled and sorted by token length, so nothing is truncated away, and cut into
batches under three limits:

* ``max_batch_size`` segments;
* ``max_padding``: padding at most 25 % of the batch's real tokens. With the attention-bias work
  trimmed (see ``attention``) a forward has little fixed cost left, so padding costs more than an
  extra batch;
* ``max_batch_cells`` padded attention cells (segments x length^2). DeBERTa's disentangled attention
  materialises several [segments x heads x length x length] tensors (scores, both relative-position
  gathers and their int64 indices); on a CPU their cost per segment grows with the batch once they
  leave the caches -- measured on 2 cores, 512-token segments run fastest one at a time. The
  default (512^2) allows 16 segments of 128 tokens, 4 of 256, one of 512; on a GPU, raise it.

The reported segment is the one with the highest score for the request's source: jailbreak for
user text, injection for tool output and documents (the PG1 card: jailbreak for user dialogue,
injection + jailbreak for third-party data). For PG2 the two are the same.

``scan`` is thread-safe: one lock serialises calls (the tokenizer backend is not re-entrant and
one forward pass already uses every CPU thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from guard.errors import BadInput
from guard.models.prompt_guard.chunking import (
    CHAR_OVERLAP,
    MAX_CHARS,
    MAX_TOKENS,
    TOKEN_OVERLAP,
    Segment,
    char_segments,
    segment_starts,
    token_segments,
)
from guard.models.prompt_guard.family import PromptGuardFamily
from guard.models.prompt_guard.preprocess import TokenStrings
from guard.models.word_cache import disable_word_cache
from guard.types import ModelInfo, PromptGuardRequest, PromptGuardResult

DEFAULT_BATCH_SIZE = 16
# Padded attention cells (segments x length^2) per batch: one full 512-token segment's worth.
DEFAULT_BATCH_CELLS = 512 * 512
# Padding tokens allowed per batch, as a fraction of its real tokens.
DEFAULT_MAX_PADDING = 0.25


@dataclass(frozen=True)
class SegmentScores:
    """Per-segment scores, in the order of the segments."""

    jailbreak: list[float]
    injection: list[float]


class PromptGuardRunner:
    """Scores texts with a Prompt Guard 1 or 2 sequence classifier."""

    def __init__(self, model: Any, tokenizer: Any, family: PromptGuardFamily, info: ModelInfo, *,
                 temperature: float = 1.0, preprocess: bool | None = None,
                 max_batch_size: int = DEFAULT_BATCH_SIZE,
                 max_batch_cells: int = DEFAULT_BATCH_CELLS,
                 max_padding: float = DEFAULT_MAX_PADDING, overlap: int | None = None) -> None:
        """``overlap``: of consecutive segments, in the family's unit (PG1 characters, default 128;
        PG2 tokens, default 64); at most half a segment (256)."""
        if not temperature > 0:
            raise BadInput(f"temperature must be > 0 (got {temperature})", param="temperature")
        if max_batch_size < 1 or max_batch_cells < 1 or max_padding < 0:
            raise BadInput("max_batch_size and max_batch_cells must be >= 1, max_padding >= 0")
        self.model = model.eval()
        self.tokenizer = tokenizer
        disable_word_cache(tokenizer)
        self.family = family
        self.temperature = float(temperature)
        self.preprocess = family.preprocess if preprocess is None else preprocess
        self.max_batch_size = max_batch_size
        self.max_batch_cells = max_batch_cells
        self.max_padding = max_padding
        if overlap is None:
            overlap = TOKEN_OVERLAP if family.token_chunks else CHAR_OVERLAP
        self.overlap = overlap
        try:
            segment_starts(0, MAX_TOKENS if family.token_chunks else MAX_CHARS, self.overlap)
        except ValueError as exc:
            raise BadInput(f"Prompt Guard segment {exc}", param="overlap") from None
        self._info = info
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._token_strings = TokenStrings(tokenizer)
        self._lock = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return self._info

    def scan(self, requests: Sequence[PromptGuardRequest]) -> list[PromptGuardResult]:
        """Score each request; one result per request, in order."""
        if not requests:
            return []
        _check_unicode(requests)
        started = time.perf_counter()
        with self._lock:
            segments = self.segment([r.text for r in requests])
            scores = self.score_segments(segments)
        latency_ms = (time.perf_counter() - started) * 1000.0
        by_request: list[list[int]] = [[] for _ in requests]
        for i, segment in enumerate(segments):
            by_request[segment.request].append(i)
        return [self._result(r, mine, segments, scores, latency_ms) for r, mine in zip(requests, by_request)]

    def segment(self, texts: Sequence[str]) -> list[Segment]:
        """The segments the reference helper scores, for every text (in request order)."""
        if self.family.token_chunks:
            return token_segments(texts, self.tokenizer, overlap=self.overlap)
        return char_segments(texts, self.tokenizer, preprocess=self.preprocess,
                             token_strings=self._token_strings, overlap=self.overlap)

    def score_segments(self, segments: Sequence[Segment]) -> SegmentScores:
        """Jailbreak and injection score of every segment (batched, sorted by length)."""
        jailbreak = [0.0] * len(segments)
        injection = [0.0] * len(segments)
        for batch in self.batches(segments):
            probs = self._probabilities([segments[i].input_ids for i in batch])
            jb = probs[:, list(self.family.jailbreak)].sum(dim=1).tolist()
            inj = probs[:, list(self.family.injection)].sum(dim=1).tolist()
            for k, i in enumerate(batch):
                jailbreak[i], injection[i] = jb[k], inj[k]
        return SegmentScores(jailbreak, injection)

    def batches(self, segments: Sequence[Segment]) -> Iterator[list[int]]:
        """Indices of segments, sorted by length, cut where a limit would be crossed."""
        order = sorted(range(len(segments)), key=lambda i: len(segments[i].input_ids))
        batch: list[int] = []
        tokens = 0
        for i in order:
            width = len(segments[i].input_ids)  # the longest so far: the order is ascending
            if batch and not self._fits(len(batch) + 1, width, tokens + width):
                yield batch
                batch, tokens = [], 0
            batch.append(i)
            tokens += width
        if batch:
            yield batch

    # ------------------------------------------------------------------ internals

    def _fits(self, size: int, width: int, tokens: int) -> bool:
        """May a batch of ``size`` segments, padded to ``width``, holding ``tokens`` real tokens, run?"""
        return (size <= self.max_batch_size and size * width**2 <= self.max_batch_cells
                and size * width <= (1.0 + self.max_padding) * tokens)

    @torch.inference_mode()
    def _probabilities(self, ids: list[list[int]]) -> torch.Tensor:
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[row, :len(seq)] = 1
        device = self.model.device
        logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        return torch.softmax(logits.float() / self.temperature, dim=-1).cpu()

    def _result(self, request: PromptGuardRequest, mine: list[int], segments: Sequence[Segment],
                scores: SegmentScores, latency_ms: float) -> PromptGuardResult:
        if not mine:  # empty text: no segment, the reference's initial score 0
            return PromptGuardResult(model=self._info, jailbreak_score=0.0, injection_score=0.0,
                                     segment=None, segment_index=0, segments=0,
                                     source=request.source, latency_ms=latency_ms)
        key = scores.jailbreak if request.source == "user" else scores.injection
        worst = max(mine, key=lambda i: key[i])  # first of equal maxima
        return PromptGuardResult(
            model=self._info,
            jailbreak_score=max(scores.jailbreak[i] for i in mine),
            injection_score=max(scores.injection[i] for i in mine),
            segment=segments[worst].text,
            segment_index=segments[worst].index,
            segments=len(mine),
            source=request.source,
            latency_ms=latency_ms,
        )


def _check_unicode(requests: Sequence[PromptGuardRequest]) -> None:
    """A lone surrogate cannot be tokenized and would fail the whole batch: name the request."""
    for index, request in enumerate(requests):
        try:
            request.text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadInput(f"requests[{index}].text is not valid Unicode (lone surrogate at character "
                           f"{exc.start})", param=f"requests[{index}].text") from None
