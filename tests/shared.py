"""Where the shared reference material and data sets live: ``../shared`` beside the clone (as in CI),
or ``GUARD_SHARED_DIR``. They are read from there, never copied into the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GUARD_SHARED_DIR", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: clone beside shared/ or set GUARD_SHARED_DIR")
    return path
