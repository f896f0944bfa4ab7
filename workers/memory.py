"""Keep a worker's memory flat under load: all pool threads started up front, few malloc arenas.

A threads-pool worker's RSS otherwise keeps growing for minutes into its first busy period, which
looks like a leak and is not one: ``ThreadPoolExecutor`` starts a thread only when a task finds
none idle, and glibc gives threads that contend for the allocator arenas of their own (up to
8 per core), each keeping the freed memory of the batch shapes it has seen.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any

log = logging.getLogger("guard.worker")

#: glibc's ``mallopt`` parameter number for the arena cap (malloc.h: ``M_ARENA_MAX``).
M_ARENA_MAX = -8
#: Arenas a worker may use: its threads mostly wait on the micro-batcher, one runs the model.
WORKER_MALLOC_ARENAS = 2


def cap_malloc_arenas(arenas: int = WORKER_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (what ``MALLOC_ARENA_MAX`` does, set from inside the process
    before the pool's threads start). False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


def start_pool_threads(pool: Any) -> None:
    """Start every thread of a threads pool now rather than as load first reaches it: each of
    ``limit`` placeholder tasks holds its thread until all have been submitted, which makes the
    executor start one thread per task."""
    executor = getattr(pool, "executor", None)
    limit = getattr(pool, "limit", None)
    if executor is None or not limit:
        return
    release = threading.Event()
    for _ in range(limit):
        executor.submit(release.wait, 10.0)
    release.set()
