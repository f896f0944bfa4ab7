"""A leaner DeBERTa-v2 self-attention for inference (Prompt Guard 1 and 2 are DeBERTa-v2/v3).

What transformers' ``DisentangledSelfAttention`` does on every forward, and what we do instead:

1. It projects the whole relative-position table (2 x 256 buckets) through the query and key
   projections in every layer -- ~14.5 GFLOP per forward for the 86M model, input-independent,
   about 70 % of the work for a 32-token prompt -- and copies the result once per batch row. Here
   the projected table is computed once at install time, in head layout, already divided by the
   attention scale.
2. It multiplies every query (and key) by all 512 relative-position rows, although a text of L
   tokens only reaches the 2L-1 buckets around the centre. Here only that window is multiplied.
3. It builds the scores in several full passes over [rows x heads x L x L] (a division of each
   bias term by the scale, ``0 + c2p``, the transposed add of ``p2c``, the sum with ``q k^T``, an
   out-of-place ``masked_fill`` and a bitwise-not of the mask in every layer). At 512 tokens those
   passes cost as much as the layer's linear projections on a CPU. Here ``q k^T`` is accumulated
   onto the gathered ``c2p`` term by the matrix product itself (``baddbmm``), ``p2c`` is gathered
   straight into the score layout (one flat gather instead of a gather plus a transposed add), and
   the padding mask is applied in place, only when the batch has padding, on key columns (a padded
   query row then attends to real keys instead of nothing: its output only ever reaches padded
   positions, which no real position attends to).
4. In the last layer of a sequence classifier whose head reads only the first token (DeBERTa's
   ``ContextPooler``), every row but the first is computed and thrown away. Here the last layer
   computes keys and values for all rows and everything else for the first row only
   (``first_token_only``): ~8 % of a 12-layer forward.

The values are the same sums of the same products; the differences are float rounding (a product
taken with the scale folded into the table, another order of additions: ~1e-7 in float32). Tried
and not kept, on a CPU: ``scaled_dot_product_attention`` with the bias as a float mask (slower than
the explicit product + softmax at 512 tokens), a flat ``index_select`` and the Transformer-XL
"skew" view for the gathers (both exact, both slower than ``gather``).

Calls that do not fit the fast path (training or gradients on, attention weights requested,
``query_states`` given, an unexpected mask or ``relative_pos`` shape) fall through to transformers'
own code. Install after the model has its final device and dtype; ``uninstall`` restores the stock
methods.
"""

from __future__ import annotations

import math
import threading
import types
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class _LengthPlan:
    """For one sequence length: the window of buckets it reaches and the gather indices."""

    low: int
    width: int
    c2p: torch.Tensor  # [L, L] int64: c2p_pos - low (columns of the window)
    p2c: torch.Tensor  # [L, L] int64: p2c_pos - low
    # [L * L] int64: element (i, j) of the transposed p2c term is element j * width + p2c[j, i] of
    # the [L, width] key-by-window product, so one flat gather yields it in score layout.
    p2c_flat: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.c2p, self.p2c, self.p2c_flat))


class _Plans:
    """Plans by sequence length, shared by the layers of one encoder (they share the bucketing);
    the most recent lengths are kept, at most ``size`` of them and ``max_bytes`` in all (a
    512-token plan holds 6 MB of indices: sixteen long lengths were ~100 MB, which a worker under
    load filled over its first minutes as its batches grew, and which looked like a leak). Also
    remembers the key-padding columns of the last attention mask seen (all layers of a forward get
    the same mask tensor)."""

    def __init__(self, size: int = 16, max_bytes: int = 24 * 2**20) -> None:
        self._plans: OrderedDict[tuple[int, str], _LengthPlan] = OrderedDict()
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._mask: tuple[torch.Tensor, torch.Tensor | None] | None = None

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def get(self, relative_pos: torch.Tensor, length: int, span: int) -> _LengthPlan:
        key = (length, str(relative_pos.device))
        with self._lock:
            found = self._plans.get(key)
            if found is not None:
                self._plans.move_to_end(key)
                return found
        found = _make_plan(relative_pos.reshape(length, length), span)
        with self._lock:
            old = self._plans.pop(key, None)
            self._bytes += found.nbytes - (old.nbytes if old is not None else 0)
            self._plans[key] = found
            while len(self._plans) > 1 and (len(self._plans) > self._size or self._bytes > self._max_bytes):
                self._bytes -= self._plans.popitem(last=False)[1].nbytes
        return found

    def key_padding(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """[B, 1, 1, L] bool, True at padded key columns; None when nothing is padded."""
        with self._lock:
            if self._mask is not None and self._mask[0] is attention_mask:
                return self._mask[1]
        padded = attention_mask.amax(dim=(1, 2)) == 0  # a column no query row may attend to
        found = padded[:, None, None, :] if bool(padded.any()) else None
        with self._lock:
            self._mask = (attention_mask, found)
        return found


class _FastBias:
    """Per-layer state: the projected table in [heads, buckets, head_dim] layout, divided by the
    attention scale, and the shared plans."""

    def __init__(self, attention: nn.Module, table: torch.Tensor, plans: _Plans) -> None:
        rows = table[0:attention.pos_ebd_size * 2, :].unsqueeze(0)
        self.scale_factor = 1 + sum(kind in attention.pos_att_type for kind in ("c2p", "p2c"))
        self.scale = math.sqrt(attention.attention_head_size * self.scale_factor)
        with torch.no_grad():
            self.pos_key = self._project(attention, rows, "key") if "c2p" in attention.pos_att_type else None
            self.pos_query = (self._project(attention, rows, "query") if "p2c" in attention.pos_att_type
                              else None)
        self.plans = plans

    def _project(self, attention: nn.Module, rows: torch.Tensor, which: str) -> torch.Tensor:
        name = f"{which}_proj" if attention.share_att_key else f"pos_{which}_proj"
        out = getattr(attention, name)(rows)  # [1, 2S, heads * head_dim]
        heads = attention.num_attention_heads
        table = out.view(out.size(1), heads, -1).permute(1, 0, 2)
        return (table / torch.tensor(self.scale, dtype=table.dtype, device=table.device)).contiguous().detach()


def _make_plan(relative: torch.Tensor, span: int) -> _LengthPlan:
    relative = relative.to(torch.long)
    length = relative.size(0)
    c2p = torch.clamp(relative + span, 0, span * 2 - 1)
    p2c = torch.clamp(-relative + span, 0, span * 2 - 1)
    low = int(torch.minimum(c2p.min(), p2c.min()))
    width = int(torch.maximum(c2p.max(), p2c.max())) - low + 1
    p2c = p2c - low
    rows = torch.arange(length, device=relative.device)
    p2c_flat = (rows[None, :] * width + p2c.t()).reshape(-1)
    return _LengthPlan(low, width, (c2p - low).contiguous(), p2c.contiguous(), p2c_flat.contiguous())


# ----------------------------------------------------------------------------- install


def install_fast_attention(model: nn.Module, first_token_only: bool | None = None) -> int:
    """Install on every DeBERTa-v2 self-attention with relative attention; return how many layers.

    ``first_token_only`` (default: when ``model`` has DeBERTa's ``ContextPooler``, whose output is
    built from the first token alone) also trims the last layer to the first row: the model's
    ``last_hidden_state`` then has one row, which is all such a classifier reads."""
    if first_token_only is None:
        first_token_only = type(getattr(model, "pooler", None)).__name__ == "ContextPooler"
    installed = 0
    for encoder in _encoders(model):
        with torch.no_grad():
            table = encoder.get_rel_embedding().detach()
        plans = _Plans()
        for layer in encoder.layer:
            attention = layer.attention.self
            if not getattr(attention, "relative_attention", False):
                continue
            for name in ("disentangled_attention_bias", "forward"):
                attention.__dict__.pop(name, None)
            attention._guard_fast_bias = _FastBias(attention, table, plans)
            attention.disentangled_attention_bias = types.MethodType(_fast_bias, attention)
            attention.forward = types.MethodType(_fast_forward, attention)
            installed += 1
        last = encoder.layer[-1]
        last.__dict__.pop("forward", None)
        if (first_token_only and installed and len(encoder.layer) > 1
                and hasattr(last.attention.self, "_guard_fast_bias")):
            last.forward = types.MethodType(_first_row_layer_forward, last)
    return installed


def uninstall_fast_attention(model: nn.Module) -> None:
    for encoder in _encoders(model):
        for layer in encoder.layer:
            layer.__dict__.pop("forward", None)
            for name in ("disentangled_attention_bias", "forward", "_guard_fast_bias"):
                layer.attention.self.__dict__.pop(name, None)


def _encoders(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if getattr(m, "relative_attention", False)
            and hasattr(m, "get_rel_embedding") and hasattr(m, "layer")]


# ----------------------------------------------------------------------------- fast paths


def _fits(self: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
          query_states: torch.Tensor | None, relative_pos: torch.Tensor | None, output_attentions: bool) -> bool:
    if self.training or torch.is_grad_enabled() or output_attentions or query_states is not None:
        return False
    if hidden_states.dim() != 3 or relative_pos is None or attention_mask is None or attention_mask.dim() != 4:
        return False
    length = hidden_states.size(1)
    return (relative_pos.shape[-2:] == (length, length) and relative_pos.numel() == length * length
            and attention_mask.shape[-2:] == (length, length))


def _fast_forward(self: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor,
                  output_attentions: bool = False, query_states: torch.Tensor | None = None,
                  relative_pos: torch.Tensor | None = None, rel_embeddings: torch.Tensor | None = None):
    if not _fits(self, hidden_states, attention_mask, query_states, relative_pos, output_attentions):
        return type(self).forward(self, hidden_states, attention_mask, output_attentions,
                                  query_states=query_states, relative_pos=relative_pos,
                                  rel_embeddings=rel_embeddings)
    return _attend(self, hidden_states, attention_mask, relative_pos), None


def _first_row_layer_forward(self: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor,
                             query_states: torch.Tensor | None = None, relative_pos: torch.Tensor | None = None,
                             rel_embeddings: torch.Tensor | None = None, output_attentions: bool = False):
    """The last encoder layer, for the first row only (keys and values from every row)."""
    if not _fits(self.attention.self, hidden_states, attention_mask, query_states, relative_pos, output_attentions):
        return type(self).forward(self, hidden_states, attention_mask, query_states=query_states,
                                  relative_pos=relative_pos, rel_embeddings=rel_embeddings,
                                  output_attentions=output_attentions)
    context = _attend(self.attention.self, hidden_states, attention_mask, relative_pos, rows=1)
    attention_output = self.attention.output(context, hidden_states[:, :1])
    return self.output(self.intermediate(attention_output), attention_output), None


def _attend(self: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor, relative_pos: torch.Tensor,
            rows: int | None = None) -> torch.Tensor:
    """Context vectors [B, rows or L, hidden] of the first ``rows`` query rows (all by default)."""
    state: _FastBias = self._guard_fast_bias
    batch, length, _ = hidden.shape
    heads = self.num_attention_heads
    plan = state.plans.get(relative_pos, length, self.pos_ebd_size)

    def split(x: torch.Tensor) -> torch.Tensor:  # [B, n, heads * d] -> [B * heads, n, d], contiguous
        return x.view(batch, x.size(1), heads, -1).transpose(1, 2).reshape(batch * heads, x.size(1), -1)

    queries = hidden if rows is None else hidden[:, :rows]
    n = queries.size(1)
    q = split(self.query_proj(queries))
    k = split(self.key_proj(hidden))
    v = split(self.value_proj(hidden))
    scale = torch.tensor(state.scale, dtype=q.dtype, device=q.device)
    k_scaled = (k / scale).transpose(-1, -2)  # transformers divides the keys, then multiplies
    if state.pos_key is not None:
        window = state.pos_key[:, plan.low:plan.low + plan.width, :].transpose(-1, -2)
        full = torch.matmul(q.view(batch, heads, n, -1), window)  # [B, heads, n, width]
        c2p = torch.gather(full, -1, plan.c2p[:n].expand(batch, heads, n, length))
        scores = c2p.view(batch * heads, n, length).baddbmm_(q, k_scaled)
    else:
        scores = torch.bmm(q, k_scaled)
    if state.pos_query is not None:
        window = state.pos_query[:, plan.low:plan.low + plan.width, :].transpose(-1, -2)
        full = torch.matmul(k.view(batch, heads, length, -1), window)  # [B, heads, L, width]
        index = plan.p2c_flat[: n * length].expand(batch * heads, n * length)
        scores.add_(full.view(batch * heads, -1).gather(-1, index).view(batch * heads, n, length))
    padded = state.plans.key_padding(attention_mask)
    if padded is not None:
        scores.view(batch, heads, n, length).masked_fill_(padded, torch.finfo(scores.dtype).min)
    context = torch.bmm(torch.softmax(scores, dim=-1), v)
    return context.view(batch, heads, n, -1).transpose(1, 2).reshape(batch, n, -1)


def _fast_bias(self: nn.Module, query_layer: torch.Tensor, key_layer: torch.Tensor,
               relative_pos: torch.Tensor | None, rel_embeddings: torch.Tensor,
               scale_factor: int) -> torch.Tensor:
    """The relative-position bias for transformers' own forward (used when ``_fast_forward`` steps
    aside but gradients are off, e.g. when attention weights are requested)."""
    length = query_layer.size(-2)
    state: _FastBias = self._guard_fast_bias
    if (self.training or torch.is_grad_enabled() or relative_pos is None or key_layer.size(-2) != length
            or relative_pos.shape[-2:] != (length, length) or relative_pos.numel() != length * length
            or scale_factor != state.scale_factor):
        stock = type(self).disentangled_attention_bias
        return stock(self, query_layer, key_layer, relative_pos, rel_embeddings, scale_factor)
    plan = state.plans.get(relative_pos, length, self.pos_ebd_size)
    heads = self.num_attention_heads
    head_dim = query_layer.size(-1)
    rows = query_layer.size(0)
    score = None
    if state.pos_key is not None:
        window = state.pos_key[:, plan.low:plan.low + plan.width, :].transpose(-1, -2)
        full = torch.matmul(query_layer.view(-1, heads, length, head_dim), window).view(rows, length, plan.width)
        score = torch.gather(full, -1, plan.c2p.expand(rows, length, length))
    if state.pos_query is not None:
        window = state.pos_query[:, plan.low:plan.low + plan.width, :].transpose(-1, -2)
        full = torch.matmul(key_layer.view(-1, heads, length, head_dim), window).view(rows, length, plan.width)
        p2c = torch.gather(full, -1, plan.p2c.expand(rows, length, length)).transpose(-1, -2)
        score = p2c if score is None else score.add_(p2c)
    return score if score is not None else 0
