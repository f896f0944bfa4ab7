"""``load_prompt_guard``: config first (the family is read from its labels, before any weights are
read), then tokenizer and weights through the shared loader (one clear ModelUnavailable when they
cannot be reached)."""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from guard.models.device import dtype_name, pick_device, pick_dtype
from guard.models.loading import load_pretrained, resolve_source, resolved_revision
from guard.models.prompt_guard.family import family_from_labels
from guard.models.prompt_guard.attention import install_fast_attention
from guard.models.prompt_guard.runner import (
    DEFAULT_BATCH_CELLS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_PADDING,
    PromptGuardRunner,
)
from guard.types import ModelInfo


def load_prompt_guard(model: str, *, revision: str | None = None, dtype: str = "auto", device: str = "auto",
                      temperature: float = 1.0, max_batch_size: int = DEFAULT_BATCH_SIZE,
                      max_batch_cells: int = DEFAULT_BATCH_CELLS, max_padding: float = DEFAULT_MAX_PADDING,
                      preprocess: bool | None = None, fast_attention: bool = True,
                      overlap: int | None = None) -> PromptGuardRunner:
    """Load a Prompt Guard 1 or 2 checkpoint (hub id or local directory).

    ``dtype="auto"`` is bfloat16 on CPUs with native bf16 and on GPUs, float32 elsewhere (see
    ``guard.models.device``); ``preprocess=None`` keeps each family's reference default (PG1 on,
    PG2 off); ``overlap=None`` each family's default segment overlap (see ``chunking``).
    ``fast_attention`` computes DeBERTa's relative-position bias from a table projected once at
    load time and only over the positions a text reaches (same values up to float rounding; see
    ``attention``).
    """
    source = resolve_source(model, revision)
    config = load_pretrained(AutoConfig, source, what="Prompt Guard config")
    family = family_from_labels(config.id2label or {}, model)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    tokenizer = load_pretrained(AutoTokenizer, source, what="Prompt Guard tokenizer")
    network = load_pretrained(AutoModelForSequenceClassification, source, what="Prompt Guard model",
                              dtype=torch_dtype)
    network = network.to(torch_device).eval()
    if fast_attention:
        install_fast_attention(network)
    info = ModelInfo(model=model, revision=resolved_revision(source), family=family.name,
                     device=str(torch_device), dtype=dtype_name(torch_dtype))
    return PromptGuardRunner(network, tokenizer, family, info, temperature=temperature, preprocess=preprocess,
                             max_batch_size=max_batch_size, max_batch_cells=max_batch_cells,
                             max_padding=max_padding, overlap=overlap)
