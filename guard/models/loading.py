"""Load weights from a Hugging Face hub id or a local directory, with one clear error when we cannot.

Shared by the Llama Guard and Prompt Guard runners. ``resolve_source`` decides what a model string
means (local directory or hub id), honours ``HF_HUB_OFFLINE`` (then only the local cache is read:
``local_files_only=True``), and ``load_pretrained`` turns every "cannot get the weights" failure of
transformers / huggingface_hub into one ``ModelUnavailable`` with a one-line message, never a
traceback.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from guard.errors import BadInput, ModelUnavailable

_TRUE = {"1", "true", "yes", "on"}
_COMMIT = re.compile(r"snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

T = TypeVar("T")


class _Pretrained(Protocol[T]):  # AutoModel*, AutoTokenizer, AutoConfig and friends
    def from_pretrained(self, name: str, **kwargs: Any) -> T: ...


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or the older ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. ``name`` is the string as configured (what results report)."""

    name: str
    location: str  # absolute directory, or the hub id
    local: bool
    revision: str | None = None
    offline: bool = False

    def pretrained_kwargs(self) -> dict[str, Any]:
        if self.local:
            return {}
        return {"revision": self.revision, "local_files_only": self.offline}


def resolve_source(model: str, revision: str | None = None) -> ModelSource:
    """A local directory when ``model`` names one; else a hub id (``name`` or ``owner/name``).

    Something that looks like a path (absolute, ``./``, ``~``, or several slashes) but is not a
    directory is reported as missing rather than sent to the hub.
    """
    model = model.strip()
    if not model:
        raise BadInput("no model given: pass a hub id (owner/name) or a local directory")
    path = Path(model).expanduser()
    if path.is_dir():
        if revision:
            raise BadInput(f"a revision ({revision!r}) only applies to hub ids, not to the local directory {model!r}")
        return ModelSource(name=model, location=str(path.resolve()), local=True)
    if not _HUB_ID.match(model):
        if path.exists():
            raise ModelUnavailable(f"model {model!r} is a file, not a model directory")
        raise ModelUnavailable(f"model {model!r} is not a local directory and not a valid hub id (owner/name)")
    return ModelSource(name=model, location=model, local=False, revision=revision, offline=hub_offline())


def load_pretrained(factory: _Pretrained[T], source: ModelSource, *, what: str = "model", **kwargs: Any) -> T:
    """``factory.from_pretrained(source)``; failures to reach the files become ``ModelUnavailable``."""
    try:
        return factory.from_pretrained(source.location, **source.pretrained_kwargs(), **kwargs)
    except _unreachable_errors() as exc:
        raise ModelUnavailable(unavailable_message(source, what, exc)) from None


def unavailable_message(source: ModelSource, what: str, exc: BaseException) -> str:
    """One line saying which weights could not be reached, why, and what to do."""
    reason = _first_line(exc)
    if source.local:
        return f"{what} directory {source.location!r} does not hold a loadable model: {reason}"
    at = f" at revision {source.revision!r}" if source.revision else ""
    if source.offline:
        return (f"{what} {source.name!r}{at} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 "
                f"forbids downloading it: download it first or pass a local directory")
    return (f"{what} {source.name!r}{at} could not be fetched from the Hugging Face hub ({reason}); "
            f"check the id, the revision, the network and HF_TOKEN for gated models, or pass a local directory")


def resolved_revision(source: ModelSource) -> str | None:
    """The commit hash the hub files came from (read from the local cache, no network), else the
    revision as given. ``None`` for local directories."""
    if source.local:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source.location, "config.json", revision=source.revision)
    except Exception:  # noqa: BLE001 - best effort: the revision is informative only
        cached = None
    match = _COMMIT.search(cached) if isinstance(cached, str) else None
    return match.group(1) if match else source.revision


def _unreachable_errors() -> tuple[type[BaseException], ...]:
    # OSError: missing files, no network, no cache; ValueError: unreadable or incomplete config.
    errors: list[type[BaseException]] = [OSError, ValueError]
    try:
        from huggingface_hub.errors import HFValidationError, HfHubHTTPError

        errors += [HfHubHTTPError, HFValidationError]
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else type(exc).__name__
    return line if len(line) <= 240 else line[:237] + "..."
