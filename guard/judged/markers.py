"""Text that imitates the Llama Guard prompt template: neutralised, and the pieces it separates.

Caller text is always tokenized as text, so ``<|eot_id|>`` typed by a caller never becomes the
special token (``guard.models.llama_guard.tokenize``). But the model still *reads* it: a fake end of
turn, an assistant header and ``safe``, an ``<END CONVERSATION>`` followed by a fake assessment, or
a line starting ``Agent:`` try to make the model take the end of the caller's message for another
turn, and judge the harmless tail instead of the payload before it. Two defences, on the judged
copy only:

* ``defang``: every marker is rewritten in a visibly neutral form that no template uses:
  ``<|eot_id|>`` -> ``(eot_id)``, ``<END CONVERSATION>`` -> ``(END CONVERSATION)``, ``[INST]`` ->
  ``(INST)``, ``<<SYS>>`` -> ``(SYS)``, ``<</SYS>>`` -> ``(/SYS)``, a line-start ``Agent:`` -> ``(Agent):``.
* ``pieces``: the texts between markers. Judged each as a message of its own, whichever turn
  structure a model reads into the markers, every piece is judged as the last message once.

Markers (matched on normalised text, see ``guard.judged.unicode``, so zero-width characters inside
them do not hide them; case-insensitive):

* special-token look-alikes ``<|name|>`` (Llama 3 and 4: ``<|eot_id|>``, ``<|eot|>``,
  ``<|begin_of_text|>``, ...), spaces allowed inside the brackets; a header
  ``<|start_header_id|>role<|end_header_id|>`` (or ``<|header_start|>``...) is one marker, role
  included;
* the prompt's section markers ``<BEGIN ...>`` / ``<END ...>`` (``CONVERSATION``, ``UNSAFE
  CONTENT CATEGORIES``);
* the Llama Guard 1/2 and Llama 2 chat markers ``[INST]``, ``[/INST]``, ``<<SYS>>``, ``<</SYS>>``
  (``<s>``/``</s>`` are left alone: they are also HTML);
* the turn labels ``User:`` and ``Agent:`` at the start of a line.
"""

from __future__ import annotations

import re

_TOKEN = r"<\s?\|\s?[A-Za-z0-9_ .:-]{1,40}?\s?\|\s?>"
_HEADER = (r"<\s?\|\s?(?:start_header_id|header_start)\s?\|\s?>[^<>\n]{0,24}?"
           r"<\s?\|\s?(?:end_header_id|header_end)\s?\|\s?>")
_SECTION = r"<\s?(?:BEGIN|END)\s[A-Z ]{1,40}>"
_LEGACY = r"\[/?INST\]|<</?SYS>>"
_LABEL = r"^[ \t]*(?:User|Agent)[ \t]*:"
MARKER = re.compile(f"{_HEADER}|{_TOKEN}|{_SECTION}|{_LEGACY}|{_LABEL}", re.IGNORECASE | re.MULTILINE)

_BRACKETS = re.compile(r"<\s?\|\s?|\s?\|\s?>|<<|>>|^<\s?|>$|^\[|\]$")
_SPACES = re.compile(r"\s+")

#: At most this many pieces per text: more are grouped (adjacent pieces joined by a newline), so
#: that a text full of markers costs a bounded number of judgements.
MAX_PIECES = 8


def _may_have_markers(text: str) -> bool:
    """Every marker holds ``<``, ``[`` or ``:``: text with none of them is not searched."""
    return "<" in text or "[" in text or ":" in text


def has_markers(text: str) -> bool:
    return _may_have_markers(text) and MARKER.search(text) is not None


def defang(text: str) -> str:
    """``text`` with every marker in its neutral form (unchanged when it has none)."""
    return MARKER.sub(_neutral, text) if _may_have_markers(text) else text


def _neutral(match: re.Match[str]) -> str:
    marker = match.group()
    label = marker.strip()
    if label.endswith(":") and "<" not in label and "[" not in label:  # a turn label
        indent = marker[: len(marker) - len(marker.lstrip())]
        return f"{indent}({label[:-1].strip()}):"
    if "|" in label:  # special tokens (a header: each of its tokens), the role kept between them
        return re.sub(_TOKEN, lambda m: f"({_inner(m.group())})", label)
    return f"({_inner(label)})"


def _inner(marker: str) -> str:
    inner = _BRACKETS.sub("", marker.strip())
    return _SPACES.sub(" ", inner).strip()


def pieces(text: str, limit: int = MAX_PIECES) -> list[str]:
    """The non-blank texts between markers, stripped, in order; [] when the markers separate fewer
    than two (then the text has nothing a marker could hide from the judged message)."""
    if not _may_have_markers(text):
        return []
    found = [p.strip() for p in MARKER.split(text)]
    found = [p for p in found if p]
    if len(found) < 2:
        return []
    if len(found) <= limit:
        return found
    size = -(-len(found) // limit)  # ceil: groups of `size` adjacent pieces
    return ["\n".join(found[i : i + size]) for i in range(0, len(found), size)]
