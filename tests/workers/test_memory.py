"""Worker memory housekeeping: freed heap pages go back to the system, periodically."""

from __future__ import annotations

import ctypes
import threading

import psutil
import pytest

from workers.memory import release_free_heap, trim_heap_periodically

CHUNK = 64 * 1024  # below glibc's mmap threshold: served from the heap, not its own mapping
CHUNKS = 2000  # ~125 MB


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def test_release_free_heap_gives_back_pages_freed_between_live_blocks():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        pytest.skip("needs glibc")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(CHUNK) for _ in range(CHUNKS)]
    try:
        for block in blocks:
            ctypes.memset(block, 1, CHUNK)  # resident
        for block in blocks[::2]:  # every other block freed: holes glibc keeps between live blocks
            libc.free(block)
        holding = _rss_mb()
        assert release_free_heap()
        released = holding - _rss_mb()
        assert released > CHUNKS // 2 * CHUNK / 2**20 * 0.5, f"only {released:.1f} MB released"
    finally:
        for block in blocks[1::2]:
            libc.free(block)


def test_trim_heap_periodically_keeps_releasing_until_stopped():
    calls: list[int] = []
    twice = threading.Event()

    def release() -> bool:
        calls.append(1)
        if len(calls) >= 2:
            twice.set()
        if len(calls) == 1:
            raise RuntimeError("a failing release must not stop the thread")
        return True

    stop = trim_heap_periodically(0.01, release)
    try:
        assert twice.wait(5)
    finally:
        stop.set()
    settled = len(calls)
    threading.Event().wait(0.1)
    assert len(calls) <= settled + 1  # stopped
