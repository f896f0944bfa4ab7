"""A worker process runs on jemalloc where it is installed: its memory then levels off under load.

Under glibc's allocator a threads-pool worker's RSS kept rising for as long as it was loaded (the
Llama Guard worker ~6 MB a minute through a five-minute run, still rising at its end), while the
memory the program itself held did not grow: heaptrack, attached to a loaded worker for 150 s,
saw 51 million allocation calls and a net consumption that never passed 13 MB. What grew was
glibc's own keeping of freed memory among the worker's ~70 threads, which neither capping its
arenas nor ``malloc_trim`` stopped. Under jemalloc the same worker's RSS stayed within a band of
about 20 MB from its third minute of load through a 21-minute run (docs/reliability.md, "Memory
under load").

An allocator is chosen before the process starts (``LD_PRELOAD``), so ``guard worker`` re-executes
itself once with jemalloc preloaded; ``GUARD_WORKER_ALLOCATOR`` is ``auto`` (jemalloc when found,
else glibc's), ``jemalloc`` (required: refuse to start without it) or ``system`` (never preload).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path
from typing import Literal

from guard.errors import ConfigError

Allocator = Literal["auto", "jemalloc", "system"]
JEMALLOC_NAME = "jemalloc"


def find_jemalloc() -> str | None:
    """The installed jemalloc's soname (``libjemalloc.so.2``), or None."""
    return ctypes.util.find_library(JEMALLOC_NAME)


def jemalloc_loaded(maps: Path = Path("/proc/self/maps")) -> bool:
    """Whether jemalloc is mapped into this process (preloaded, or linked)."""
    try:
        return f"lib{JEMALLOC_NAME}" in maps.read_text()
    except OSError:
        return False


def preload_env(choice: Allocator, env: dict[str, str]) -> dict[str, str] | None:
    """The environment to re-execute with so that ``choice`` is the allocator, or None when the
    process may run as it is (``system``; jemalloc already preloaded; ``auto`` without jemalloc)."""
    if choice == "system":
        return None
    preloaded = env.get("LD_PRELOAD", "")
    if f"lib{JEMALLOC_NAME}" in preloaded:
        return None
    library = find_jemalloc()
    if library is None:
        if choice == "jemalloc":
            raise ConfigError("GUARD_WORKER_ALLOCATOR=jemalloc, but no jemalloc library is installed "
                              "(Debian/Ubuntu: apt install libjemalloc2)")
        return None
    return {**env, "LD_PRELOAD": f"{library}:{preloaded}" if preloaded else library}


def reexec_with(choice: Allocator) -> None:
    """Replace this process by the same command with ``choice`` preloaded (no return), if needed."""
    env = preload_env(choice, dict(os.environ))
    if env is None:
        return
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
