"""Runners turn off their tokenizer's word cache: ``tokenizers`` keeps one per calling thread, so a
worker whose pool threads take turns encoding new words grows native memory for as long as new
words arrive (measured here as glibc's in-use heap, which Python's own counters do not see)."""

from __future__ import annotations

import ctypes
import random
import string
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from tokenizers import Tokenizer

from guard.models.llama_guard.runner import load_llama_guard
from guard.models.llama_guard.tokenize import encode_text
from guard.models.prompt_guard.load import load_prompt_guard
from guard.models.word_cache import disable_word_cache

THREADS = 16
#: In-use heap a run of ~80,000 new words on 16 threads may add once the caches are off (measured
#: ~1 MB); with the caches on it added ~24 MB.
FLAT_MB = 6.0
GROWING_MB = 12.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_in_use() -> Callable[[], int]:
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc's mallinfo2 to read the native heap")
    mallinfo2.restype = _MallInfo2
    return lambda: mallinfo2().uordblks


def _new_word_texts(seed: int) -> list[list[str]]:
    """Per thread, 25 texts of 200 made-up words (new to every cache)."""
    rng = random.Random(seed)

    def text() -> str:
        return " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 10)))
                        for _ in range(200))

    return [[text() for _ in range(25)] for _ in range(THREADS)]


def heap_growth_mb(encode: Callable[[str], object], seed: int) -> float:
    in_use = _heap_in_use()
    per_thread = _new_word_texts(seed)
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda _: None, range(THREADS)))  # threads up before measuring
        before = in_use()
        list(pool.map(lambda texts: [encode(t) for t in texts], per_thread))
        after = in_use()
    return (after - before) / 2**20


def test_a_tokenizer_with_its_word_cache_grows_per_thread_and_without_it_does_not(demo_models):
    """The mechanism, on the demo Llama Guard tokenizer: the same new words, cache on and off."""
    path = str(demo_models.llama_guard / "tokenizer.json")
    cached = Tokenizer.from_file(path)
    uncached = Tokenizer.from_file(path)
    assert disable_word_cache(uncached)
    assert heap_growth_mb(cached.encode, seed=1) > GROWING_MB
    assert heap_growth_mb(uncached.encode, seed=2) < FLAT_MB


def test_llama_guard_and_prompt_guard_runners_encode_on_many_threads_without_growing(demo_models):
    llama = load_llama_guard(str(demo_models.llama_guard), dtype="float32")
    prompt = load_prompt_guard(str(demo_models.prompt_guard_2), dtype="float32")
    assert heap_growth_mb(lambda text: encode_text(llama.tokenizer, text), seed=3) < FLAT_MB
    assert heap_growth_mb(lambda text: llama.tokenizer(text), seed=4) < FLAT_MB
    assert heap_growth_mb(lambda text: prompt.tokenizer(text), seed=5) < FLAT_MB
