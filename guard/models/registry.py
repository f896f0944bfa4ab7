"""Which models this process serves, loaded lazily and once per process.

``load_runners(settings)`` returns the process-wide ``Runners`` for those settings. Nothing loads
until a runner is first asked for (``runners.llama_guard`` / ``runners.prompt_guard``, or
``runners.get(kind)``); concurrent first calls wait for one load. With no model configured the tiny
demo models are built (or reused from their cache) and served, so the embedded default works out of
the box. A failed load is not cached: the next call tries again (the weights may have appeared).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from guard.errors import GuardError, ModelUnavailable
from guard.settings import GuardSettings
from guard.types import ModelInfo

if TYPE_CHECKING:
    from guard.models.llama_guard.runner import LlamaGuardRunner
    from guard.models.prompt_guard import PromptGuardRunner

ModelKind = Literal["llama_guard", "prompt_guard"]
MODEL_KINDS: tuple[ModelKind, ...] = ("llama_guard", "prompt_guard")

#: Family of the demo Llama Guard model (guard.models.testing builds it in this family's format).
DEMO_LLAMA_GUARD_FAMILY = "llama-guard-3-1b"


@dataclass(frozen=True)
class ModelSpec:
    """What to load for one kind: everything a load depends on (also the process cache key)."""

    kind: ModelKind
    model: str  # hub id or directory; "" = the demo model
    revision: str | None
    family: str | None
    dtype: str
    device: str
    demo_dir: str
    overlap: int | None = None  # Prompt Guard segment overlap (None = the family's default)

    @classmethod
    def from_settings(cls, settings: GuardSettings, kind: ModelKind) -> ModelSpec:
        lg = kind == "llama_guard"
        return cls(
            kind=kind,
            model=settings.llama_guard if lg else settings.prompt_guard,
            # "" (an unset variable passed through, as compose does) means "not set".
            revision=(settings.llama_guard_revision if lg else settings.prompt_guard_revision) or None,
            family=(settings.family or None) if lg else None,
            dtype=settings.dtype,
            device=settings.device,
            demo_dir=str(settings.demo_models_dir),
            overlap=None if lg else settings.prompt_guard_overlap,
        )

    @property
    def is_demo(self) -> bool:
        return not self.model


#: One model load at a time per process: transformers' loading is not safe to run concurrently in
#: two threads (weights were left on the meta device when Llama Guard and Prompt Guard loaded at once).
_LOAD_LOCK = threading.Lock()


class _Slot:
    """One lazily loaded runner; ``get`` loads it on first use, under a lock."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._runner: Any = None
        self.loading = False
        self.error: str | None = None

    @property
    def loaded(self) -> bool:
        return self._runner is not None

    @property
    def info(self) -> ModelInfo | None:
        return self._runner.info if self._runner is not None else None

    def get(self) -> Any:
        runner = self._runner
        if runner is not None:
            return runner
        with self._lock:
            if self._runner is None:
                self._runner = self._load()
            return self._runner

    def _load(self) -> Any:
        self.loading = True
        try:
            with _LOAD_LOCK:
                runner = _LOADERS[self.spec.kind](self.spec)
        except GuardError as error:
            self.error = f"{error.kind}: {error.message}"
            raise
        except Exception as error:  # noqa: BLE001 - any load failure means "model unavailable"
            self.error = f"model_unavailable: {type(error).__name__}: {error}"
            raise ModelUnavailable(f"cannot load the {self.spec.kind} model: {error}") from error
        finally:
            self.loading = False
        self.error = None
        return runner


class Runners:
    """The Llama Guard and Prompt Guard runners of this process (each loaded on first use)."""

    def __init__(self, settings: GuardSettings) -> None:
        self._slots = {kind: _Slot(ModelSpec.from_settings(settings, kind)) for kind in MODEL_KINDS}

    @property
    def llama_guard(self) -> LlamaGuardRunner:
        return self._slots["llama_guard"].get()  # type: ignore[no-any-return]

    @property
    def prompt_guard(self) -> PromptGuardRunner:
        return self._slots["prompt_guard"].get()  # type: ignore[no-any-return]

    @classmethod
    def of(cls, settings: GuardSettings, **loaded: Any) -> Runners:
        """Runners with some kinds already loaded (``llama_guard=runner``): for tests and benches."""
        runners = cls(settings)
        for kind, runner in loaded.items():
            runners._slots[kind]._runner = runner  # noqa: SLF001
        return runners

    def get(self, kind: ModelKind) -> Any:
        return self._slots[kind].get()

    def spec(self, kind: ModelKind) -> ModelSpec:
        return self._slots[kind].spec

    def loaded(self, kind: ModelKind) -> bool:
        return self._slots[kind].loaded

    def loading(self, kind: ModelKind) -> bool:
        return self._slots[kind].loading

    def info(self, kind: ModelKind) -> ModelInfo | None:
        return self._slots[kind].info

    def error(self, kind: ModelKind) -> str | None:
        return self._slots[kind].error


_cache: dict[tuple[ModelSpec, ...], Runners] = {}
_cache_lock = threading.Lock()


def load_runners(settings: GuardSettings) -> Runners:
    """The process-wide runners for these settings (created once; models load on first use)."""
    key = tuple(ModelSpec.from_settings(settings, kind) for kind in MODEL_KINDS)
    with _cache_lock:
        runners = _cache.get(key)
        if runners is None:
            runners = _cache[key] = Runners(settings)
        return runners


# --------------------------------------------------------------------------- loaders


def _demo_paths(spec: ModelSpec) -> Any:
    from pathlib import Path

    from guard.models.testing import ensure_demo_models

    return ensure_demo_models(Path(spec.demo_dir))


def _load_llama_guard(spec: ModelSpec) -> Any:
    from guard.models.llama_guard.runner import load_llama_guard

    model, family = spec.model, spec.family
    if spec.is_demo:
        model, family = str(_demo_paths(spec).llama_guard), family or DEMO_LLAMA_GUARD_FAMILY
    return load_llama_guard(model, family=family, revision=spec.revision, dtype=spec.dtype,
                            device=spec.device)


def _load_prompt_guard(spec: ModelSpec) -> Any:
    from guard.models.prompt_guard import load_prompt_guard

    model = str(_demo_paths(spec).prompt_guard_2) if spec.is_demo else spec.model
    return load_prompt_guard(model, revision=spec.revision, dtype=spec.dtype, device=spec.device,
                             overlap=spec.overlap)


_LOADERS = {"llama_guard": _load_llama_guard, "prompt_guard": _load_prompt_guard}
