"""The key/value state of the fixed prompt header, computed once and reused.

Everything before the conversation (BOS, task line, category list, ``<BEGIN CONVERSATION>``)
depends only on the family, the judged role and the category set, so its key/value state is the
same for every request sharing them. ``HeaderCache`` keeps it per exact header token sequence (which
encodes family, role and categories) in a bounded LRU; ``stack_headers`` lays several headers out
along the batch dimension, each padded on the right to the longest one. The padding columns are
masked out by the runner's attention mask, and positions are passed explicitly, so a header of
length h keeps its positions 0..h-1 and the conversation that follows starts at position h.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from guard.models.cache_arg import cache_kwargs

Layers = tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer: keys, values [1, heads, h, dim]


@dataclass(frozen=True)
class HeaderKV:
    ids: tuple[int, ...]
    layers: Layers

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


class HeaderCache:
    """Bounded LRU of header key/value states (by entries and by bytes). Thread-safe."""

    def __init__(self, max_entries: int = 16, max_bytes: int = 512 * 2**20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], HeaderKV] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ids: tuple[int, ...]) -> HeaderKV | None:
        with self._lock:
            entry = self._entries.get(ids)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(ids)
            self.hits += 1
            return entry

    def put(self, entry: HeaderKV) -> None:
        if self.max_entries <= 0 or entry.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(entry.ids, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[entry.ids] = entry
            self._bytes += entry.nbytes
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


@torch.inference_mode()
def compute_headers(model, headers: Sequence[tuple[int, ...]]) -> list[HeaderKV]:
    """Run the model over each header (one batched forward; headers right-padded, which causal
    attention makes harmless for the real positions) and keep the key/value state."""
    if not headers:
        return []
    device = model.device
    width = max(len(h) for h in headers)
    ids = torch.zeros((len(headers), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, header in enumerate(headers):
        ids[row, : len(header)] = torch.tensor(header, device=device)
        mask[row, : len(header)] = 1
    positions = torch.arange(width, device=device).expand(len(headers), width)
    cache = DynamicCache(config=model.config)
    model(input_ids=ids, attention_mask=mask, position_ids=positions, **cache_kwargs(model, cache),
          use_cache=True, logits_to_keep=1)
    out = []
    for row, header in enumerate(headers):
        layers = tuple((k[row : row + 1, :, : len(header)].clone(), v[row : row + 1, :, : len(header)].clone())
                       for k, v in _layer_kv(cache))
        out.append(HeaderKV(ids=tuple(header), layers=layers))
    return out


def stack_headers(model, headers: Sequence[HeaderKV | None]) -> tuple[DynamicCache | None, list[int]]:
    """A batch cache whose row i holds header i right-padded to the longest header (``None`` =
    no cached header for that row: all padding). Returns the cache (None when every row is empty)
    and the per-row header lengths."""
    lengths = [h.length if h is not None else 0 for h in headers]
    width = max(lengths, default=0)
    if width == 0:
        return None, lengths
    template = next(h for h in headers if h is not None and h.length)
    distinct = {id(h) for h in headers}
    layers = []
    for layer_idx, (k0, v0) in enumerate(template.layers):
        if len(distinct) == 1:  # the common case: one header for the whole batch
            keys = k0.expand(len(headers), -1, -1, -1).contiguous()
            values = v0.expand(len(headers), -1, -1, -1).contiguous()
        else:
            shape = (len(headers), k0.shape[1], width, k0.shape[3])
            keys = k0.new_zeros(shape)
            values = v0.new_zeros((len(headers), v0.shape[1], width, v0.shape[3]))
            for row, header in enumerate(headers):
                if header is not None and header.length:
                    k, v = header.layers[layer_idx]
                    keys[row, :, : header.length] = k[0]
                    values[row, :, : header.length] = v[0]
        layers.append((keys, values))
    return DynamicCache(ddp_cache_data=layers, config=model.config), lengths


def _layer_kv(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]
