"""Turn off the word cache of a fast tokenizer, which grows with every thread that encodes.

A ``tokenizers`` BPE or Unigram model remembers the pieces of each word it has split, in a cache
per calling thread. A guard runner encodes on whichever thread hands it work (in a Celery worker,
any of its pool's threads), so under steady load with new words the caches keep filling, thread
after thread: a Llama Guard worker with 32 threads grew about 2 MB a minute for 20 minutes, all of
it native memory that no Python profiler sees. Without the cache, encoding a 125-character text
costs ~50 us instead of ~30 us (demo tokenizer), against milliseconds for the forward pass.
"""

from __future__ import annotations

from typing import Any


def disable_word_cache(tokenizer: Any) -> bool:
    """Set the word cache of ``tokenizer``'s model (a transformers fast tokenizer or a bare
    ``tokenizers.Tokenizer``) to zero entries; False when it has none to turn off."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    resize = getattr(getattr(backend, "model", None), "_resize_cache", None)
    if resize is None:
        return False
    resize(0)
    return True
