"""A leaner computation of DeBERTa-v2's relative-position attention bias, for inference.

Prompt Guard 1 and 2 are DeBERTa-v2/v3 models. In transformers' ``disentangled_attention_bias``
every layer, on every forward:

1. projects the whole relative-position table (2 x 256 buckets) through the query and key
   projections -- ~14.5 GFLOP per forward for the 86M model, input-independent, about 70 % of the
   work for a 32-token prompt -- and copies the result into head layout, once per batch row
   (``.repeat``);
2. multiplies every query (and key) by all 512 relative-position rows, although a text of L tokens
   only uses the 2L-1 buckets around the centre (for L <= 128 the buckets are the distances).

Here the projected table is computed once, in head layout, at install time (the weights and the
table are fixed in inference); each forward multiplies only by the rows its length can reach, then
gathers like transformers does (with indices shifted into that window, built once per length and
shared by the layers). The values are the same dot products; differences are float rounding from a
narrower matrix product (~1e-7 in float32). A flat ``index_select`` and the Transformer-XL "skew"
view were tried for the gather: both exact, both slower than ``gather`` at 512 tokens on a CPU; so
was fusing the rest of the attention into ``scaled_dot_product_attention`` (no gain measured).

Calls that do not fit the fast path (training or gradients on, cross-attention with different query and key
lengths, an unexpected ``relative_pos`` shape) fall through to transformers' own code.

Install after the model has its final device and dtype; ``uninstall`` restores the stock method.
"""

from __future__ import annotations

import threading
import types
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class _LengthPlan:
    """For one sequence length: the window of buckets it reaches and the flat gather indices."""

    low: int
    width: int
    c2p: torch.Tensor  # [L, L] int64: c2p_pos - low (columns of the window)
    p2c: torch.Tensor  # [L, L] int64: p2c_pos - low


class _Plans:
    """Plans by sequence length, shared by the layers of one encoder (they share the bucketing);
    the most recent ``size`` lengths are kept (a 512-token plan holds 4 MB of indices)."""

    def __init__(self, size: int = 16) -> None:
        self._plans: OrderedDict[tuple[int, str], _LengthPlan] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, relative_pos: torch.Tensor, length: int, span: int) -> _LengthPlan:
        key = (length, str(relative_pos.device))
        with self._lock:
            found = self._plans.get(key)
            if found is not None:
                self._plans.move_to_end(key)
                return found
        found = _make_plan(relative_pos.reshape(length, length), span)
        with self._lock:
            self._plans[key] = found
            while len(self._plans) > self._size:
                self._plans.popitem(last=False)
        return found


class _FastBias:
    """Per-layer state: the projected table in [heads, buckets, head_dim] layout and the plans."""

    def __init__(self, attention: nn.Module, table: torch.Tensor, plans: _Plans) -> None:
        rows = table[0:attention.pos_ebd_size * 2, :].unsqueeze(0)
        with torch.no_grad():
            self.pos_key = self._project(attention, rows, "key") if "c2p" in attention.pos_att_type else None
            self.pos_query = (self._project(attention, rows, "query") if "p2c" in attention.pos_att_type
                              else None)
        self.plans = plans

    @staticmethod
    def _project(attention: nn.Module, rows: torch.Tensor, which: str) -> torch.Tensor:
        name = f"{which}_proj" if attention.share_att_key else f"pos_{which}_proj"
        out = getattr(attention, name)(rows)  # [1, 2S, heads * head_dim]
        heads = attention.num_attention_heads
        return out.view(out.size(1), heads, -1).permute(1, 0, 2).contiguous().detach()


def _make_plan(relative: torch.Tensor, span: int) -> _LengthPlan:
    relative = relative.to(torch.long)
    c2p = torch.clamp(relative + span, 0, span * 2 - 1)
    p2c = torch.clamp(-relative + span, 0, span * 2 - 1)
    low = int(torch.minimum(c2p.min(), p2c.min()))
    width = int(torch.maximum(c2p.max(), p2c.max())) - low + 1
    return _LengthPlan(low, width, (c2p - low).contiguous(), (p2c - low).contiguous())


def install_fast_attention(model: nn.Module) -> int:
    """Install on every DeBERTa-v2 self-attention with relative attention; return how many layers."""
    installed = 0
    for encoder in _encoders(model):
        with torch.no_grad():
            table = encoder.get_rel_embedding().detach()
        plans = _Plans()
        for layer in encoder.layer:
            attention = layer.attention.self
            if not getattr(attention, "relative_attention", False):
                continue
            attention.__dict__.pop("disentangled_attention_bias", None)
            attention._guard_fast_bias = _FastBias(attention, table, plans)
            attention.disentangled_attention_bias = types.MethodType(_fast_bias, attention)
            installed += 1
    return installed


def uninstall_fast_attention(model: nn.Module) -> None:
    for encoder in _encoders(model):
        for layer in encoder.layer:
            layer.attention.self.__dict__.pop("disentangled_attention_bias", None)
            layer.attention.self.__dict__.pop("_guard_fast_bias", None)


def _encoders(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if getattr(m, "relative_attention", False)
            and hasattr(m, "get_rel_embedding") and hasattr(m, "layer")]


def _fast_bias(self: nn.Module, query_layer: torch.Tensor, key_layer: torch.Tensor,
               relative_pos: torch.Tensor | None, rel_embeddings: torch.Tensor,
               scale_factor: int) -> torch.Tensor:
    length = query_layer.size(-2)
    if (self.training or torch.is_grad_enabled() or relative_pos is None or key_layer.size(-2) != length
            or relative_pos.shape[-2:] != (length, length) or relative_pos.numel() != length * length):
        stock = type(self).disentangled_attention_bias
        return stock(self, query_layer, key_layer, relative_pos, rel_embeddings, scale_factor)
    state: _FastBias = self._guard_fast_bias
    span = self.pos_ebd_size
    plan = state.plans.get(relative_pos, length, span)
    heads = self.num_attention_heads
    head_dim = query_layer.size(-1)
    rows = query_layer.size(0)
    scale = torch.sqrt(torch.tensor(head_dim, dtype=torch.float) * scale_factor).to(dtype=query_layer.dtype)
    score = 0
    if state.pos_key is not None:
        window = state.pos_key[:, plan.low:plan.low + plan.width, :].transpose(-1, -2)
        full = torch.matmul(query_layer.view(-1, heads, length, head_dim), window)
        full = full.view(rows, length, plan.width)
        c2p = torch.gather(full, -1, plan.c2p.expand(rows, length, length))
        score = score + c2p / scale
    if state.pos_query is not None:
        window = state.pos_query[:, plan.low:plan.low + plan.width, :].transpose(-1, -2)
        full = torch.matmul(key_layer.view(-1, heads, length, head_dim), window)
        full = full.view(rows, length, plan.width)
        p2c = torch.gather(full, -1, plan.p2c.expand(rows, length, length))
        score = score + p2c.transpose(-1, -2) / scale
    return score
