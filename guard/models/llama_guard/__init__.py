"""Llama Guard: families, prompt rendering and tokenization (runner and scoring live beside them).

Light to import: nothing here pulls torch or transformers.
"""

from guard.models.llama_guard.family import FAMILY_NAMES, FamilySpec, Piece, Special, get_family, guess_family
from guard.models.llama_guard.prompt import RenderedPrompt, Turn, render_prompt
from guard.models.llama_guard.tokenize import EncodedPrompt, encode_prompt, encode_text, special_id

__all__ = [
    "FAMILY_NAMES", "EncodedPrompt", "FamilySpec", "Piece", "RenderedPrompt", "Special", "Turn",
    "encode_prompt", "encode_text", "get_family", "guess_family", "render_prompt", "special_id",
]
