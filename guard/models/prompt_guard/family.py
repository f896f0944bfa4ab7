"""Which Prompt Guard generation a checkpoint is, read from its config labels.

Prompt Guard 1 (Prompt-Guard-86M) has three labels BENIGN / INJECTION / JAILBREAK; Prompt Guard 2
(Llama-Prompt-Guard-2-86M / -22M) has BENIGN / MALICIOUS. Label names are matched ignoring case and
surrounding whitespace; their positions are taken from ``id2label``, never assumed.

Generic names (``LABEL_0`` ...) are refused: a checkpoint saved without label names gives no way
to tell a PG1 head from any other three-way classifier, and guessing the meaning of the columns
would silently produce wrong scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from guard.errors import ConfigError

FamilyName = Literal["prompt-guard-1", "prompt-guard-2"]

PG1_LABELS = frozenset({"BENIGN", "INJECTION", "JAILBREAK"})
PG2_LABELS = frozenset({"BENIGN", "MALICIOUS"})


@dataclass(frozen=True)
class PromptGuardFamily:
    """A Prompt Guard generation and the column indices of the probabilities it scores.

    ``jailbreak`` columns are summed into ``jailbreak_score``, ``injection`` columns into
    ``injection_score`` (PG1: p[JAILBREAK] and p[INJECTION] + p[JAILBREAK]; PG2: p[MALICIOUS] for
    both).
    """

    name: FamilyName
    jailbreak: tuple[int, ...]
    injection: tuple[int, ...]
    num_labels: int

    @property
    def token_chunks(self) -> bool:
        """PG2 splits long text into 512-token chunks; PG1 into 512-character chunks."""
        return self.name == "prompt-guard-2"

    @property
    def preprocess(self) -> bool:
        """PG1's reference helper squeezes inserted whitespace out by default; PG2's does not."""
        return self.name == "prompt-guard-1"


def family_from_labels(id2label: Mapping[Any, str], model: str = "model") -> PromptGuardFamily:
    """Identify the family from ``config.id2label``.

    A checkpoint that is neither generation is a ConfigError (the configured model is wrong for
    this role; the CLI exits 2), raised before any weights are loaded.
    """
    index = _label_index(id2label)
    names = frozenset(index)
    if names == PG1_LABELS and len(index) == len(id2label):
        jailbreak = (index["JAILBREAK"],)
        injection = tuple(sorted((index["INJECTION"], index["JAILBREAK"])))
        return PromptGuardFamily("prompt-guard-1", jailbreak, injection, len(index))
    if names == PG2_LABELS and len(index) == len(id2label):
        malicious = (index["MALICIOUS"],)
        return PromptGuardFamily("prompt-guard-2", malicious, malicious, len(index))
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0])))
    raise ConfigError(
        f"{model} is not a Prompt Guard model: its config.json id2label is {{{shown}}}; expected "
        "BENIGN, INJECTION, JAILBREAK (Prompt Guard 1) or BENIGN, MALICIOUS (Prompt Guard 2)"
    )


def _label_index(id2label: Mapping[Any, str]) -> dict[str, int]:
    """Upper-cased label name -> class index (a repeated name keeps its first index)."""
    index: dict[str, int] = {}
    for key, label in id2label.items():
        index.setdefault(str(label).strip().upper(), int(key))
    return index
