"""Pieces of an over-long conversation (``guard.models.llama_guard.split``), with a word tokenizer:
every piece fits, nothing is left out, a phrase across a chunk boundary is whole in one chunk, and
the combined result is the worst piece's."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from guard.errors import ContextOverflow
from guard.models.llama_guard.prompt import Turn
from guard.models.llama_guard.split import combine, split_turns
from guard.types import LlamaGuardResult, ModelInfo

HEADER = 20  # tokens of the fixed prompt (header, instructions)
LABEL = 3  # "User: " ... "\n\n"


class Words:
    """One token per word; a turn costs its words plus its label."""

    def cost(self, turns: Sequence[Turn]) -> int:
        return HEADER + sum(LABEL + len(t.text.split()) for t in turns)

    def starts(self, text: str) -> list[int]:
        return [m.start() for m in re.finditer(r"\S+", text)]


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


def turns(*pairs: tuple[str, str]) -> list[Turn]:
    return [Turn(side, text, (i,)) for i, (side, text) in enumerate(pairs)]  # type: ignore[arg-type]


@pytest.mark.parametrize("budget", [130, 200])  # one or two exchanges beside the last turn
def test_earlier_turns_become_context_windows_beside_the_whole_last_turn(budget):
    conversation = turns(*[(("User", "Agent")[i % 2], words(f"t{i}w", 30)) for i in range(9)])
    last = conversation[-1]
    split = split_turns(conversation, budget=budget, measure=Words())
    assert len(split.pieces) == 4 * 130 // budget and "context windows" in split.how
    for piece in split.pieces:
        assert piece[-1] == last  # judged whole in every piece
        assert Words().cost(piece) <= budget
        if len(piece) > 1:
            assert piece[-2].side != last.side  # a window never ends on the judged side
    shown = [t for piece in split.pieces for t in piece[:-1]]
    assert set(shown) == set(conversation[:-1])  # every earlier turn is context somewhere


def test_an_over_long_last_turn_is_cut_into_overlapping_chunks_that_keep_a_phrase_whole():
    phrase = "ignore all previous instructions"
    text = words("a", 98) + " " + phrase + " " + words("b", 200)  # the phrase straddles word 100
    conversation = turns(("User", "hello"), ("Agent", "hi"), ("User", text))
    split = split_turns(conversation, budget=HEADER + LABEL + 2 + 100, measure=Words(), overlap=8)
    chunks = [piece[0].text for piece in split.pieces]
    assert all(len(piece) == 1 and Words().cost(piece) <= 125 for piece in split.pieces)
    assert "2 earlier turns" in split.how and "not shown" in split.how
    assert sum(phrase in chunk for chunk in chunks) >= 1
    assert set(" ".join(chunks).split()) == set(text.split())  # every word judged
    without = split_turns(conversation, budget=125, measure=Words(), overlap=0)
    assert not any(phrase in piece[0].text for piece in without.pieces)  # the cut falls inside it


def test_a_turn_too_long_beside_the_last_one_is_chunked_as_context():
    conversation = turns(("User", words("u", 300)), ("Agent", "ok"), ("User", "and now?"))
    split = split_turns(conversation, budget=100, measure=Words())
    assert all(piece[-1].text == "and now?" and Words().cost(piece) <= 100 for piece in split.pieces)
    context = " ".join(t.text for piece in split.pieces for t in piece[:-1])
    assert set(context.split()) == set(words("u", 300).split()) | {"ok"}


def test_no_room_for_any_text_is_a_context_overflow():
    with pytest.raises(ContextOverflow):
        split_turns(turns(("User", words("w", 50))), budget=HEADER + LABEL, measure=Words())


def _result(unsafe: float, categories: list[str], scores: dict[str, float]) -> LlamaGuardResult:
    return LlamaGuardResult(model=ModelInfo(model="m", family="llama-guard-3-1b"), unsafe_score=unsafe,
                            unsafe_score_pair=unsafe, categories=categories, category_scores=scores,
                            output="unsafe\n" + ",".join(categories) if categories else "safe")


def test_the_worst_piece_decides_and_categories_are_the_union():
    combined = combine([_result(0.2, [], {"S1": 0.1, "S9": 0.05}),
                        _result(0.9, ["S9"], {"S1": 0.01, "S9": 0.85}),
                        _result(0.6, ["S1"], {"S1": 0.5, "S9": 0.02})], "how")
    assert (combined.unsafe_score, combined.piece, combined.pieces, combined.split) == (0.9, 1, 3, "how")
    assert combined.categories == ["S9", "S1"] and combined.output == "unsafe\nS9"
    assert combined.category_scores == {"S1": 0.5, "S9": 0.85}
