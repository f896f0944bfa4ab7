"""A small, deterministic training loop for the demo causal LMs.

Two things keep it to seconds on two CPU cores:

* loss only on the answer tokens, so the vocabulary projection runs on a handful of positions;
* examples that share a long prefix (the Llama Guard prompt header, identical for every
  conversation with the same judged role) compute that prefix once per step, at batch size 1,
  and expand its key/value cache over the batch. Gradients flow through the shared prefix, so
  this is the same computation as running every full sequence, only cheaper.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from guard.models.cache_arg import cache_kwargs


@dataclass(frozen=True)
class Example:
    """``prefix + body`` is the prompt; the model learns to continue it with ``answer``."""

    prefix: tuple[int, ...]
    body: tuple[int, ...]
    answer: tuple[int, ...]


def split_prefix(prompt: Sequence[int], prefix: Sequence[int]) -> tuple[int, ...]:
    """The prompt ids after ``prefix``; the split must fall on a token boundary."""
    if list(prompt[: len(prefix)]) != list(prefix):
        raise ValueError("the prompt ids do not start with the shared prefix ids")
    return tuple(prompt[len(prefix) :])


def train_causal_lm(
    model: PreTrainedModel,
    examples: Sequence[Example],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    pad_id: int,
    seed: int = 0,
    validation: Sequence[Example] = (),
    extra_rounds: int = 2,
) -> list[float]:
    """Train in place with AdamW: ``steps`` steps of warmup and cosine decay to zero, so that the
    model ends annealed. While greedy decoding misses a ``validation`` answer (or wins it by a thin
    margin), run up to ``extra_rounds`` more rounds of half the steps at half the rate. A further
    round can also make things worse (its warmup shakes an annealed model; by how much depends on
    the CPU's float rounding), so the model ends with the weights of the round that answered the
    most validation examples confidently. Returns the loss of each step."""
    groups: dict[tuple[int, ...], list[Example]] = defaultdict(list)
    for example in examples:
        groups[example.prefix].append(example)
    rng = random.Random(seed)
    prefixes = sorted(groups)
    weights = [len(groups[p]) for p in prefixes]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses: list[float] = []
    best_accuracy, best_state = -1.0, None
    for round_ in range(1 + extra_rounds):
        round_steps = steps if round_ == 0 else steps // 2
        peak = lr if round_ == 0 else lr / 2
        model.train()
        for step in range(round_steps):
            for group in optimizer.param_groups:
                group["lr"] = peak * _lr_factor(step, round_steps // 10, round_steps)
            prefix = rng.choices(prefixes, weights=weights)[0]
            batch = rng.sample(groups[prefix], min(batch_size, len(groups[prefix])))
            loss = _batch_loss(model, prefix, batch, pad_id)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        accuracy = answer_accuracy(model, validation, pad_id, margin=0.8)
        if accuracy > best_accuracy:
            best_accuracy, best_state = accuracy, _snapshot(model)
        if accuracy == 1.0:
            break
    if best_state is not None and accuracy < best_accuracy:
        model.load_state_dict(best_state)
    model.eval()
    return losses


def _snapshot(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup, then a cosine decay that reaches zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def answer_accuracy(
    model: PreTrainedModel, examples: Sequence[Example], pad_id: int, margin: float = 0.0
) -> float:
    """Fraction of examples whose whole answer is the argmax at every answer position (what greedy
    decoding produces), each answer token with probability above ``margin``; 1.0 for none."""
    if not examples:
        return 1.0
    model.eval()
    groups: dict[tuple[int, ...], list[Example]] = defaultdict(list)
    for example in examples:
        groups[example.prefix].append(example)
    right = 0
    for prefix, group in groups.items():
        logits, targets, rows = _answer_logits(model, prefix, group, pad_id)
        probs = logits.softmax(-1)
        chosen = probs.gather(1, targets[:, None])[:, 0]
        hits = ((probs.argmax(-1) == targets) & (chosen > margin)).tolist()
        wrong = {row for hit, row in zip(hits, rows) if not hit}
        right += len(group) - len(wrong)
    return right / len(examples)


def _batch_loss(
    model: PreTrainedModel, prefix: tuple[int, ...], batch: list[Example], pad_id: int
) -> torch.Tensor:
    logits, targets, _ = _answer_logits(model, prefix, batch, pad_id)
    return torch.nn.functional.cross_entropy(logits, targets)


def _answer_logits(
    model: PreTrainedModel, prefix: tuple[int, ...], batch: list[Example], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Logits at the positions that predict answer tokens, the answer tokens, and each one's row.
    Sequences are right-padded and need no attention mask: in a causal model, padding after the
    answer never reaches the positions we score."""
    seqs = [ex.body + ex.answer for ex in batch]
    width = max(map(len, seqs))
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    rows, cols, targets = [], [], []
    for i, (ex, seq) in enumerate(zip(batch, seqs)):
        ids[i, : len(seq)] = torch.tensor(seq)
        for j, token in enumerate(ex.answer):
            # The logit that predicts answer[j] sits one position earlier (the prefix's last
            # position when the body is empty, which does not happen in our data).
            rows.append(i)
            cols.append(len(ex.body) + j - 1)
            targets.append(token)
    backbone = model.get_decoder()
    cache = None
    if prefix:
        cache = DynamicCache(config=model.config)
        backbone(input_ids=torch.tensor([prefix]), **cache_kwargs(backbone, cache), use_cache=True)
        cache.batch_repeat_interleave(len(batch))
    start = len(prefix)
    positions = torch.arange(start, start + width).unsqueeze(0).expand(len(batch), -1)
    hidden = backbone(
        input_ids=ids, **cache_kwargs(backbone, cache), use_cache=cache is not None, position_ids=positions
    ).last_hidden_state
    logits = model.get_output_embeddings()(hidden[rows, cols])
    return logits, torch.tensor(targets), rows
