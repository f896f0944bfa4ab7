"""Judge a conversation longer than the Llama Guard model reads in pieces that each fit (pure).

Llama Guard judges the last turn of a conversation; the earlier turns are its context. When the
prompt (header, conversation, instructions, room for the answer) is longer than the model's
context, nothing is cut off: the conversation is judged in pieces, each a complete prompt that
fits, and the results are combined (``combine``: the worst piece decides).

* **The last turn fits beside the fixed prompt**: every piece ends with it, whole. The earlier
  turns are packed into context windows from the most recent backwards, each as large as fits
  beside the last turn, so every earlier turn is context to the last turn in some piece. Windows
  are cut between exchanges, after a turn of the other side than the last one, so a window never
  ends on the last turn's side (which would read as part of the judged message). An exchange too
  long to fit beside the last turn is taken turn by turn, and a turn too long for that is cut into
  overlapping chunks, each a window of its own (a turn of the last turn's side then precedes it as
  a turn of its own: pieces are rendered without merging turns again).
* **The last turn alone does not fit**: it is cut into chunks of tokens that overlap by
  ``overlap`` tokens (so a phrase up to that long is whole in some chunk), each judged on its own
  as the last turn. No earlier turn fits beside a chunk: they are not shown, and ``Split.how``
  says so.

Chunks are cut at token boundaries of the text tokenized alone and stripped (as the templates strip
a message); whitespace-only chunks are dropped. Sizes are measured with the model's tokenizer
through a ``Measure``, so this module knows no model: turn sizes are estimated from each text alone
(plus ``TURN_SLACK`` tokens for merges with the template text around it), and every piece is then
measured whole and cut again if it still does not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from guard.errors import ContextOverflow
from guard.models.llama_guard.prompt import JudgedRole, Turn
from guard.types import LlamaGuardResult

#: Tokens allowed per turn for the tokenizer merging a turn's first or last characters with the
#: template text around it (sizes are measured on the text alone).
TURN_SLACK = 2
#: Overlap of consecutive chunks of one over-long turn, in tokens.
DEFAULT_OVERLAP = 64

Piece = tuple[Turn, ...]


class Measure(Protocol):
    def cost(self, turns: Sequence[Turn]) -> int:
        """Token count of the whole prompt whose conversation is ``turns``."""
        ...

    def starts(self, text: str) -> list[int]:
        """Start character of each token of ``text`` tokenized on its own."""
        ...


@dataclass(frozen=True)
class Split:
    pieces: tuple[Piece, ...]  # each ends with the judged turn, or with a chunk of it
    how: str  # one line for the result and the audit record


def split_turns(turns: Sequence[Turn], budget: int, measure: Measure, *,
                overlap: int = DEFAULT_OVERLAP) -> Split:
    """Pieces of ``turns`` whose prompts each cost at most ``budget`` tokens."""
    *earlier, last = turns
    if measure.cost([last]) > budget:
        chunks = chunk_turn(last, (), budget, measure, overlap)
        how = f"the last {last.side} turn in {len(chunks)} overlapping chunks, each judged on its own"
        if earlier:
            how += f"; the {len(earlier)} earlier turns fit beside no chunk and were not shown"
        return Split(tuple((chunk,) for chunk in chunks), how)
    windows = _windows(earlier, last, budget, measure, overlap)
    how = (f"{len(earlier)} earlier turns in {len(windows)} context windows, "
           f"the last {last.side} turn whole in each")
    return Split(tuple((*window, last) for window in windows), how)


def chunk_turn(turn: Turn, after: Piece, budget: int, measure: Measure, overlap: int) -> list[Turn]:
    """``turn`` (followed by ``after`` in the prompt) cut into overlapping chunks that fit."""
    if measure.cost([turn, *after]) <= budget:
        return [turn]
    starts = measure.starts(turn.text)
    room = budget - _fixed(turn.side, after, measure) - TURN_SLACK
    chunks: list[Turn] = []
    begin = 0
    while True:
        size = room
        while True:
            if size < 1:
                raise ContextOverflow(f"the model's context holds no {turn.side} text beside the fixed "
                                      f"prompt ({budget} tokens)", param="messages")
            end = min(begin + size, len(starts))
            chunk = Turn(turn.side, _cut(turn.text, starts, begin, end), turn.messages)
            excess = measure.cost([chunk, *after]) - budget if chunk.text else 0
            if excess <= 0:
                break
            size -= excess
        if chunk.text:
            chunks.append(chunk)
        if end >= len(starts):
            return chunks or [turn]
        begin = end - min(overlap, size // 2)


def combine(results: Sequence[LlamaGuardResult], how: str) -> LlamaGuardResult:
    """One result for the pieces of one conversation: the worst piece (highest unsafe score, the
    first of equals) gives the unsafe score, its pair and the output; category scores are the
    maximum over the pieces, categories the union (the worst piece's first). Conservative: a code
    one piece lists is weighed with the worst piece's unsafe score."""
    worst = max(range(len(results)), key=lambda i: results[i].unsafe_score)
    top = results[worst]
    scores: dict[str, float] = {}
    for result in results:
        for code, score in result.category_scores.items():
            scores[code] = max(scores.get(code, 0.0), score)
    categories = list(dict.fromkeys(code for result in (top, *results) for code in result.categories))
    return top.model_copy(update={
        "category_scores": scores, "categories": categories, "pieces": len(results), "piece": worst,
        "split": how, "latency_ms": max(result.latency_ms for result in results),
    })


# ----------------------------------------------------------------------------- context windows


def _windows(earlier: Sequence[Turn], last: Turn, budget: int, measure: Measure, overlap: int) -> list[Piece]:
    base = measure.cost([last])
    overhead = {side: _fixed(side, (last,), measure) - base for side in ("User", "Agent")}

    def size(turn: Turn) -> int:
        return len(measure.starts(turn.text)) + overhead[turn.side] + TURN_SLACK

    windows: list[Piece] = []  # most recent first
    current: Piece = ()
    used = base
    for unit in reversed(_exchanges(earlier, last.side)):
        need = sum(size(turn) for turn in unit)
        if current and used + need > budget:
            windows.append(current)
            current, used = (), base
        if used + need <= budget:
            current, used = unit + current, used + need
            continue
        for turn in reversed(unit):  # too long beside the last turn even alone: turn by turn
            chunks = chunk_turn(turn, (last,), budget, measure, overlap)
            windows.extend((chunk,) for chunk in reversed(chunks))
    if current or not windows:
        windows.append(current)
    windows.reverse()
    return [fitted for window in windows for fitted in _fit(window, last, budget, measure, overlap)]


def _fit(window: Piece, last: Turn, budget: int, measure: Measure, overlap: int) -> list[Piece]:
    """``window`` as it is when its piece fits (the estimate was right), else cut further."""
    if measure.cost([*window, last]) <= budget:
        return [window]
    if len(window) == 1:
        return [(chunk,) for chunk in chunk_turn(window[0], (last,), budget, measure, overlap)]
    cuts = [i for i in range(1, len(window)) if window[i - 1].side != last.side] or range(1, len(window))
    cut = min(cuts, key=lambda i: abs(2 * i - len(window)))
    head, tail = window[:cut], window[cut:]
    return [*_fit(head, last, budget, measure, overlap), *_fit(tail, last, budget, measure, overlap)]


def _exchanges(earlier: Sequence[Turn], side: JudgedRole) -> list[Piece]:
    """The earlier turns grouped so that each group ends with a turn of the other side."""
    units: list[Piece] = []
    current: list[Turn] = []
    for turn in earlier:
        current.append(turn)
        if turn.side != side:
            units.append(tuple(current))
            current = []
    if current:
        units.append(tuple(current))
    return units


def _fixed(side: JudgedRole, after: Piece, measure: Measure) -> int:
    """Tokens of the prompt for a turn of ``side`` followed by ``after``, besides that turn's text."""
    return measure.cost([Turn(side, "x", ()), *after]) - len(measure.starts("x"))


def _cut(text: str, starts: list[int], begin: int, end: int) -> str:
    stop = starts[end] if end < len(starts) else len(text)
    return text[starts[begin]:stop].strip()
