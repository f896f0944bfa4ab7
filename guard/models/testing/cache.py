"""Build the demo models once per builder version and reuse them.

Models live in ``<root>/<key>/<name>`` where ``key`` hashes the builder's source, the Llama Guard
prompt it trains on and the torch / transformers / tokenizers versions: a change to any of them
builds a fresh set beside the old one. Each model is built by a child process (two at a time) in a
temporary directory and renamed into place, so a directory that exists is complete; an exclusive
file lock keeps concurrent processes (pytest and the workers it starts) from building twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

import tokenizers
import torch
import transformers

from guard.models.testing.chat import build_chat_model
from guard.models.testing.llama_guard import build_llama_guard_model, prompt_fingerprint
from guard.models.testing.prompt_guard import build_prompt_guard_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoModels:
    """Local directories, each loadable with ``Auto*.from_pretrained``."""

    llama_guard: Path
    prompt_guard_1: Path
    prompt_guard_2: Path
    chat: Path


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "llama_guard": build_llama_guard_model,
    "prompt_guard_1": partial(build_prompt_guard_model, version=1),
    "prompt_guard_2": partial(build_prompt_guard_model, version=2),
    "chat": build_chat_model,
}
# Longest first, so that two workers finish at about the same time.
BUILD_ORDER = ("llama_guard", "chat", "prompt_guard_1", "prompt_guard_2")


def builder_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(prompt_fingerprint().encode())
    digest.update(f"{torch.__version__} {transformers.__version__} {tokenizers.__version__}".encode())
    return digest.hexdigest()[:16]


def default_root() -> Path:
    from guard.settings import GuardSettings

    return GuardSettings().demo_models_dir


def ensure_demo_models(root: Path | None = None, *, force: bool = False) -> DemoModels:
    """Return the demo models under ``root`` (default: settings' ``demo_models_dir``), building the
    missing ones; ``force`` rebuilds all of them."""
    base = Path(root or default_root()).expanduser() / builder_key()
    models = DemoModels(**{name: base / name for name in BUILDERS})
    if not force and all(_ready(getattr(models, f.name)) for f in fields(models)):
        return models
    base.mkdir(parents=True, exist_ok=True)
    with _exclusive(base / ".lock"):
        if force:
            for name in BUILDERS:
                if getattr(models, name).exists():
                    _discard(getattr(models, name))
        missing = [name for name in BUILD_ORDER if not _ready(getattr(models, name))]
        # Two builds at a time, each in its own single-threaded process: on two cores that
        # halves the wall time (the Llama Guard build alone takes as long as the other three).
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            for future in [pool.submit(_build_into, getattr(models, name)) for name in missing]:
                future.result()
    return models


def _ready(path: Path) -> bool:
    return (path / "config.json").is_file()


def _build_into(target: Path) -> None:
    """Build one model in a child process into a staging directory, then rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "guard.models.testing", target.name, str(staging)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not _ready(staging):
            raise RuntimeError(f"building the demo model {target.name} failed:\n{done.stderr[-3000:]}")
        if target.exists():  # left incomplete by an older builder
            _discard(target)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "built demo model %s in %.1f s (%s s of CPU)",
        target,
        time.perf_counter() - started,
        done.stdout.strip().rpartition(" ")[2],
    )


def _discard(path: Path) -> None:
    """Move aside first, so that the name never points at a half-deleted model."""
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}-old-", dir=path.parent))
    os.rename(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def quiet_single_thread() -> Iterator[None]:
    """Tiny models train faster on one thread, and far faster when other processes share the
    cores (intra-op threads then mostly wait for each other). No progress bars while saving."""
    from transformers.utils import logging as hf_logging

    threads, bars = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()
