"""Keep a worker's memory flat under load: all pool threads started up front and, on glibc's
allocator (a worker without jemalloc, see ``workers.allocator``), few malloc arenas and freed heap
pages handed back to the system every few seconds.

A threads-pool worker's RSS otherwise keeps growing for minutes into its first busy period, which
looks like a leak and is not one: ``ThreadPoolExecutor`` starts a thread only when a task finds
none idle, and glibc gives threads that contend for the allocator arenas of their own (up to
8 per core), each keeping the freed memory of the batch shapes it has seen.

Even with two arenas, a Llama Guard worker's heap keeps freed memory between the live blocks of
its ever-changing batch shapes: over ten minutes of load its RSS rose with glibc's free (not in
use) heap, 22 -> 35 MB. ``malloc_trim(0)`` returns those free pages; it takes well under a
millisecond on a heap of several hundred MB, so a worker runs it every ``TRIM_INTERVAL_S``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("guard.worker")

#: glibc's ``mallopt`` parameter number for the arena cap (malloc.h: ``M_ARENA_MAX``).
M_ARENA_MAX = -8
#: Arenas a worker may use: its threads mostly wait on the micro-batcher, one runs the model.
WORKER_MALLOC_ARENAS = 2
#: Seconds between two hand-backs of free heap pages (``trim_heap_periodically``).
TRIM_INTERVAL_S = 10.0


@functools.cache
def _libc() -> Any | None:
    """The C library, loaded once (``find_library`` runs ``ldconfig``: not every trim)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None


def cap_malloc_arenas(arenas: int = WORKER_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (what ``MALLOC_ARENA_MAX`` does, set from inside the process
    before the pool's threads start). False where the C library is not glibc."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


def release_free_heap() -> bool:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim(0)``); False where
    the C library has no such call or nothing was released."""
    trim = getattr(_libc(), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


def trim_heap_periodically(interval_s: float = TRIM_INTERVAL_S,
                           release: Callable[[], bool] = release_free_heap) -> threading.Event:
    """Run ``release`` every ``interval_s`` on a daemon thread; set the returned event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                release()
            except Exception:  # noqa: BLE001 - never let housekeeping kill the worker
                log.exception("releasing free heap memory failed")

    threading.Thread(target=loop, name="guard-heap-trim", daemon=True).start()
    return stop


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
