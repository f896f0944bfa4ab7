"""Token ids of a rendered prompt, with caller text kept free of special tokens.

The template's own special tokens (``Special`` pieces) become their vocabulary ids; every run of
text between them is tokenized on its own with special-token parsing off, so a message that carries
``<|eot_id|><|start_header_id|>assistant<|end_header_id|>`` is read as those characters, never as
the tokens. For ordinary text the ids equal ``tokenizer(prompt, add_special_tokens=False)``, since
the reference also splits the text at the special tokens and tokenizes the runs separately.

Special-token parsing is switched off on a private copy of the backend ``tokenizers.Tokenizer``
(``encode_special_tokens = True`` set once), not with transformers' ``split_special_tokens=True``
call flag: that flag flips the shared backend's state on every call, so another thread tokenizing
with the default could turn it back on in the middle of ours.

Every prompt carries exactly one BOS: it is in the template text for LG3/LG4; for the ``[INST]``
families (LG1/LG2) whose template has none, it is prepended here (the ids then equal
``tokenizer(prompt)`` with the tokenizer's default BOS).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guard.errors import ConfigError
from guard.models.llama_guard.family import Piece, Special, get_family
from guard.models.llama_guard.prompt import RenderedPrompt
from guard.models.word_cache import disable_word_cache


@dataclass(frozen=True)
class EncodedPrompt:
    ids: list[int]
    # Number of leading ids equal to the separately encoded header (0 when the header does not end
    # on a token boundary): the prefix whose key/value state can be cached and reused.
    header_len: int
    # [start, end) id range of each turn's text (same order as ``RenderedPrompt.turns``).
    message_spans: list[tuple[int, int]]


def encode_prompt(tokenizer: Any, rendered: RenderedPrompt) -> EncodedPrompt:
    spec = get_family(rendered.family)
    bos = [] if spec.bos_in_template else [special_id(tokenizer, spec.bos)]
    ids, offsets = _encode_pieces(tokenizer, rendered.pieces)
    ids, offsets = bos + ids, [(0, 0)] * len(bos) + offsets
    header_ids, _ = _encode_pieces(tokenizer, rendered.header)
    header_ids = bos + header_ids
    header_len = len(header_ids) if ids[: len(header_ids)] == header_ids else 0
    spans = [_span(offsets, start, end) for start, end in rendered.message_ranges]
    return EncodedPrompt(ids=ids, header_len=header_len, message_spans=spans)


def prompt_length(tokenizer: Any, rendered: RenderedPrompt) -> int:
    """``len(encode_prompt(tokenizer, rendered).ids)``, without the header and span bookkeeping."""
    bos = 0 if get_family(rendered.family).bos_in_template else 1
    return bos + len(_encode_pieces(tokenizer, rendered.pieces)[0])


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Ids of plain text with special-token parsing off and no added BOS/EOS."""
    return _text_backend(tokenizer).encode(text, add_special_tokens=False).ids


def token_starts(tokenizer: Any, text: str) -> list[int]:
    """Start character of each token of plain text (tokenized as ``encode_text`` does)."""
    return [start for start, _ in _text_backend(tokenizer).encode(text, add_special_tokens=False).offsets]


def special_id(tokenizer: Any, token: str) -> int:
    token_id = _backend(tokenizer).token_to_id(token)
    if token_id is None:
        raise ConfigError(f"the tokenizer has no {token!r} token: is the Llama Guard family right?")
    return token_id


# ----------------------------------------------------------------------------- pieces -> ids


def _encode_pieces(tokenizer: Any, pieces: Sequence[Piece]) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and, per id, its character range in the concatenated text of ``pieces``."""
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    position = 0
    run: list[str] = []

    def flush() -> None:
        nonlocal position
        text = "".join(run)
        run.clear()
        if not text:
            return
        encoding = _text_backend(tokenizer).encode(text, add_special_tokens=False)
        ids.extend(encoding.ids)
        offsets.extend((position + a, position + b) for a, b in encoding.offsets)
        position += len(text)

    for piece in pieces:
        if isinstance(piece, Special):
            flush()
            ids.append(special_id(tokenizer, piece.token))
            offsets.append((position, position + len(piece.token)))
            position += len(piece.token)
        else:
            run.append(piece)
    flush()
    return ids, offsets


def _span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The id range whose characters overlap [start, end); an empty range at the boundary when the
    text is empty."""
    inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > start]
    if inside:
        return inside[0], inside[-1] + 1
    first = next((i for i, (a, _) in enumerate(offsets) if a >= start), len(offsets))
    return first, first


# ----------------------------------------------------------------------------- backends


def _backend(tokenizer: Any) -> Any:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "token_to_id"):
        backend = tokenizer  # a bare tokenizers.Tokenizer
    if backend is None:
        raise ConfigError(f"a fast (tokenizers-backed) tokenizer is needed, got {type(tokenizer).__name__}")
    return backend


_COPIES: OrderedDict[int, tuple[Any, Any]] = OrderedDict()
_COPIES_MAX = 8
_LOCK = threading.Lock()


def _text_backend(tokenizer: Any) -> Any:
    """A private copy of the backend with special-token parsing off, no truncation, no padding.
    Cached per tokenizer object (the cache holds the tokenizer, so its id cannot be reused)."""
    key = id(tokenizer)
    with _LOCK:
        hit = _COPIES.get(key)
        if hit is not None and hit[0] is tokenizer:
            _COPIES.move_to_end(key)
            return hit[1]
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(_backend(tokenizer).to_str())
    copy.encode_special_tokens = True
    disable_word_cache(copy)
    copy.no_truncation()
    copy.no_padding()
    with _LOCK:
        _COPIES[key] = (tokenizer, copy)
        while len(_COPIES) > _COPIES_MAX:
            _COPIES.popitem(last=False)
    return copy
