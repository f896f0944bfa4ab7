"""The keyword a transformers model's ``forward`` takes its key/value cache by.

transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns from 5.2x and goes in
5.40); the supported range (``pyproject.toml``) spans both, so the name is read off the model's
signature, once per model class.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


@functools.cache
def _keyword(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for ``model(**...)``, with the name this model's ``forward`` takes."""
    return {_keyword(type(model)): cache}
