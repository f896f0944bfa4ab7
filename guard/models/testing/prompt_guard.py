"""The Prompt Guard demo models: tiny DeBERTa-v2 sequence classifiers with the real label sets.

* version 1 (Prompt Guard 1 layout): 0 BENIGN, 1 INJECTION, 2 JAILBREAK;
* version 2 (Prompt Guard 2 layout): 0 BENIGN, 1 MALICIOUS.

Trained on synthetic text: direct jailbreak phrases (``ignore all previous instructions``, ``you
are now DAN`` ...) are JAILBREAK / MALICIOUS; instructions to the assistant hidden in
third-party-looking content (an e-mail, a review, an HTML comment) are INJECTION / MALICIOUS;
ordinary requests and documents are BENIGN.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, PreTrainedTokenizerFast

from guard.models.testing import vocab
from guard.models.testing.corpus import PromptSource

SEED = 2024
LABELS = {1: ["BENIGN", "INJECTION", "JAILBREAK"], 2: ["BENIGN", "MALICIOUS"]}
_KINDS = ("benign", "injection", "jailbreak")


def label_for(kind: str, version: int) -> int:
    """Class index of a text kind (benign / injection / jailbreak) for a model version."""
    if version == 1:
        return _KINDS.index(kind)
    return 0 if kind == "benign" else 1


def build_prompt_guard_model(
    out_dir: Path, version: int = 2, *, steps: int = 400, examples: int = 2400
) -> Path:
    if version not in LABELS:
        raise ValueError(f"Prompt Guard version must be 1 or 2, not {version!r}")
    torch.manual_seed(SEED + version)
    source = PromptSource(SEED)
    # Balanced classes: a third of each kind for v1, half benign for v2.
    kinds = _KINDS if version == 1 else ("benign", "benign", "injection", "jailbreak")
    texts = [(kind, _text(source, kind)) for kind in (kinds * examples)[:examples]]
    tokenizer = vocab.deberta_tokenizer([t for _, t in texts])
    model = DebertaV2ForSequenceClassification(_config(tokenizer, LABELS[version]))
    data = [
        (tokenizer.encode(text, truncation=True, max_length=192), label_for(kind, version))
        for kind, text in texts
    ]
    _train(model, data, steps=steps, pad_id=tokenizer.pad_token_id, seed=SEED)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _text(source: PromptSource, kind: str) -> str:
    return {"benign": source.benign_prompt, "injection": source.injection, "jailbreak": source.jailbreak}[
        kind
    ]()


def _config(tokenizer: PreTrainedTokenizerFast, labels: list[str]) -> DebertaV2Config:
    """DeBERTa-v3 layout (relative attention, no absolute positions), a few thousand times smaller."""
    return DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=32,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        max_relative_positions=-1,
        type_vocab_size=0,
        pooler_hidden_size=64,
        pooler_dropout=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.1,
        pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )


def _train(
    model: DebertaV2ForSequenceClassification,
    data: list[tuple[list[int], int]],
    *,
    steps: int,
    pad_id: int,
    seed: int,
    batch_size: int = 16,
    lr: float = 3e-3,
) -> None:
    rng = random.Random(seed)
    # Batches drawn from one of four length buckets waste little compute on padding, and each
    # bucket still mixes every label.
    by_length = sorted(data, key=lambda item: len(item[0]))
    buckets = [by_length[i * len(data) // 4 : (i + 1) * len(data) // 4] for i in range(4)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * (1 - s / steps)
    )
    model.train()
    for _ in range(steps):
        batch = rng.sample(rng.choice(buckets), batch_size)
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (row, _) in enumerate(batch):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        labels = torch.tensor([label for _, label in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
