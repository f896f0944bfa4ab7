"""Render the Llama Guard prompt of a family from OpenAI-style messages, without jinja.

The canonical prompt is the model's own Hugging Face chat template, byte for byte, for the
conversations that template accepts. Where the templates are silent, wrong or strict, the rules are
ours and the same for every family (``docs/models.md``, "Prompt formats"):

* string content is rendered as one text part (never the 1B template's empty conversation);
* ``system`` messages are context for the chat model, not content to judge: they are dropped;
* ``tool`` messages belong to the Agent side (a tool result is part of the agent's turn);
* consecutive messages of the same side are merged into one turn, so that "ONLY THE LAST User
  message" covers everything the user sent since the agent last spoke; the turn's text is every
  non-empty part, each stripped, joined with one newline (a single part renders exactly as the
  templates render it: ``part.strip()``);
* the judged role is the side of the last turn (User or Agent), not the templates' parity rule;
* custom categories replace the default list, exclusions drop codes without renumbering, for every
  family (the 8B template would ignore both).

Message text is data: it is only ever concatenated, never formatted or parsed, and tokenization
(``tokenize.encode_prompt``) keeps it free of special tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from guard.errors import BadInput
from guard.models.llama_guard.family import FamilySpec, Piece, Special, get_family, piece_text
from guard.taxonomy import resolve_categories
from guard.types import Message

JudgedRole = Literal["User", "Agent"]

_SIDE: dict[str, JudgedRole] = {"user": "User", "assistant": "Agent", "tool": "Agent"}


@dataclass(frozen=True)
class Turn:
    """One rendered turn: consecutive same-side messages merged."""

    side: JudgedRole
    text: str  # as printed after "User: " / "Agent: "
    messages: tuple[int, ...]  # indices of the source messages in the caller's conversation


@dataclass(frozen=True)
class RenderedPrompt:
    family: str
    role: JudgedRole
    # Pieces before the first turn: depend only on family, role and categories (cacheable prefix).
    header: tuple[Piece, ...]
    # Turns, instructions and the closing assistant header.
    body: tuple[Piece, ...]
    categories: dict[str, str]  # as printed, after custom replacement and exclusions
    turns: tuple[Turn, ...]
    # Character range of each turn's text inside ``text`` (same order as ``turns``).
    message_ranges: tuple[tuple[int, int], ...]
    text: str  # the exact prompt string

    @property
    def pieces(self) -> tuple[Piece, ...]:
        return self.header + self.body

    @property
    def header_text(self) -> str:
        return "".join(piece_text(p) for p in self.header)


def render_prompt(
    conversation: Sequence[Message],
    family: str | FamilySpec,
    categories: dict[str, str] | None = None,
    excluded: Sequence[str] = (),
) -> RenderedPrompt:
    return render_turns(build_turns(conversation), family, categories, excluded)


def render_turns(
    turns: Sequence[Turn],
    family: str | FamilySpec,
    categories: dict[str, str] | None = None,
    excluded: Sequence[str] = (),
) -> RenderedPrompt:
    """The prompt for turns already built (``build_turns``), each rendered as given: a piece of a
    split conversation (``pieces``) is rendered without merging its turns again."""
    spec = family if isinstance(family, FamilySpec) else get_family(family)
    turns = tuple(turns)
    role = turns[-1].side
    resolved = resolve_categories(
        spec.name, dict(categories) if categories is not None else dict(spec.default_categories),
        tuple(excluded),
    )
    header = render_header(spec, role, resolved)
    header_chars = sum(len(piece_text(p)) for p in header)
    body, ranges = _render_body(spec, role, turns, offset=header_chars)
    text = "".join(piece_text(p) for p in header + body)
    return RenderedPrompt(family=spec.name, role=role, header=header, body=body, categories=resolved,
                          turns=turns, message_ranges=ranges, text=text)


def build_turns(conversation: Sequence[Message]) -> tuple[Turn, ...]:
    """Drop system messages, map roles to sides, merge consecutive same-side messages."""
    if not conversation:
        raise BadInput("the conversation is empty", param="messages")
    merged: list[tuple[JudgedRole, list[str], list[int]]] = []
    for index, message in enumerate(conversation):
        side = _SIDE.get(message.role)
        if side is None:  # system
            continue
        if merged and merged[-1][0] == side:
            merged[-1][1].extend(message.parts)
            merged[-1][2].append(index)
        else:
            merged.append((side, list(message.parts), [index]))
    if not merged:
        raise BadInput("nothing to judge: the conversation holds no user, assistant or tool message",
                       param="messages")
    turns = tuple(Turn(side, _turn_text(parts), tuple(indices)) for side, parts, indices in merged)
    if not turns[-1].text:
        raise BadInput(f"nothing to judge: the last {turns[-1].side} turn is empty", param="messages")
    return turns


def _turn_text(parts: list[str]) -> str:
    stripped = (part.strip() for part in parts)
    return "\n".join(part for part in stripped if part)


def render_header(spec: FamilySpec, role: JudgedRole, categories: dict[str, str]) -> tuple[Piece, ...]:
    t = spec.template
    lines = "".join(code + t.category_separator + text + "\n" for code, text in categories.items())
    return _join_text(t.opening + (t.task.format(role=role), lines, t.conversation_open))


def _render_body(
    spec: FamilySpec, role: JudgedRole, turns: tuple[Turn, ...], offset: int
) -> tuple[tuple[Piece, ...], tuple[tuple[int, int], ...]]:
    t = spec.template
    pieces: list[Piece] = []
    ranges: list[tuple[int, int]] = []
    position = offset
    for turn in turns:
        label = turn.side + t.label_separator
        start = position + len(label)
        ranges.append((start, start + len(turn.text)))
        pieces += [label, turn.text, t.turn_end]
        position = start + len(turn.text) + len(t.turn_end)
    pieces.append(t.instruction.format(role=role))
    pieces += t.closing
    return _join_text(tuple(pieces)), tuple(ranges)


def _join_text(pieces: tuple[Piece, ...]) -> tuple[Piece, ...]:
    """Merge adjacent text pieces and drop empty ones (same text, fewer pieces)."""
    out: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, Special):
            out.append(piece)
        elif piece:
            if out and isinstance(out[-1], str):
                out[-1] = out[-1] + piece
            else:
                out.append(piece)
    return tuple(out)
