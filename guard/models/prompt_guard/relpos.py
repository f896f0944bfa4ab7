"""Cache DeBERTa-v2's relative-position projections, which do not depend on the input.

Every forward of a DeBERTa-v2/v3 model (Prompt Guard 1 and 2) passes the whole relative-position
table (2 x position_buckets rows) through each layer's query and key projections, whatever the
input. For the 86M model that is a fixed ~14.5 GFLOP per forward: about 70 % of the work for a
32-token prompt. In inference mode the table and the weights are fixed, so the projections are
computed once here and reused.

How, without copying transformers' attention code: the encoder's ``get_rel_embedding`` is made to
return one persistent tensor, and the projection modules (``query_proj``/``key_proj``, or
``pos_query_proj``/``pos_key_proj``) answer with the cached output when -- and only when -- they
are called on a view of exactly that tensor's storage with the table's shape. Hidden states can
never alias that storage, so any other call computes as before; if a later transformers version
computes the table differently, the cache simply never hits. The cached values are produced by the
same modules on the same input, so results are bitwise those of the uncached model.

Install after the model has its final device and dtype, in eval mode; weights must not change
afterwards (``uninstall`` undoes everything).
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

_PROJECTIONS = ("query_proj", "key_proj", "pos_query_proj", "pos_key_proj")


def install_relpos_cache(model: nn.Module) -> int:
    """Install the cache on every DeBERTa-v2 encoder inside ``model``; return how many projection
    modules now answer from it (0 when the model has no relative attention)."""
    installed = 0
    for encoder in _encoders(model):
        installed += _install(encoder)
    return installed


def uninstall_relpos_cache(model: nn.Module) -> None:
    """Remove the cache: every module computes again (also before re-installing)."""
    for encoder in _encoders(model):
        _uninstall(encoder)


def _encoders(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if getattr(m, "relative_attention", False) and hasattr(m, "get_rel_embedding") and hasattr(m, "layer")]


def _uninstall(encoder: nn.Module) -> None:
    encoder.__dict__.pop("get_rel_embedding", None)
    for layer in encoder.layer:
        for name in _PROJECTIONS:
            module = getattr(layer.attention.self, name, None)
            if isinstance(module, nn.Module):
                module.__dict__.pop("forward", None)


def _install(encoder: nn.Module) -> int:
    _uninstall(encoder)
    with torch.no_grad():
        table = encoder.get_rel_embedding().detach().clone()
    encoder.get_rel_embedding = lambda: table
    installed = 0
    for layer in encoder.layer:
        attention = layer.attention.self
        span = getattr(attention, "pos_ebd_size", None)
        if span is None:
            continue
        key = table[0:span * 2, :].unsqueeze(0)
        for name in _PROJECTIONS:
            module = getattr(attention, name, None)
            if isinstance(module, nn.Module):
                _cache_projection(module, key)
                installed += 1
    return installed


def _cache_projection(module: nn.Module, key: torch.Tensor) -> None:
    with torch.no_grad():
        cached = module(key).detach().clone()
    pointer, shape = key.data_ptr(), key.shape
    compute = type(module).forward

    def forward(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not args and not kwargs and x.data_ptr() == pointer and x.shape == shape:
            return cached
        return compute(self, x, *args, **kwargs)

    module.forward = types.MethodType(forward, module)
