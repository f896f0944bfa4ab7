"""The key/value cache goes to ``forward`` under the name the installed transformers takes."""

from __future__ import annotations

import warnings

import torch
from transformers import DynamicCache

from guard.models.cache_arg import cache_kwargs


class _OldForward(torch.nn.Module):
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):  # noqa: ANN001, ANN201
        return past_key_values


class _NewForward(torch.nn.Module):
    def forward(self, input_ids=None, cache=None, use_cache=None):  # noqa: ANN001, ANN201
        return cache


def test_the_name_follows_the_forward_signature() -> None:
    marker = object()
    assert cache_kwargs(_OldForward(), marker) == {"past_key_values": marker}
    assert cache_kwargs(_NewForward(), marker) == {"cache": marker}
    assert _OldForward()(**cache_kwargs(_OldForward(), marker)) is marker
    assert _NewForward()(**cache_kwargs(_NewForward(), marker)) is marker


def test_the_demo_llama_guard_fills_the_cache_without_a_deprecation_warning(demo_models) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo_models.llama_guard)
    cache = DynamicCache(config=model.config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model(input_ids=torch.tensor([[1, 2, 3]]), **cache_kwargs(model, cache), use_cache=True)
    assert cache.get_seq_length() == 3
