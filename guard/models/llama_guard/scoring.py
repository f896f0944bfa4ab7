"""Llama Guard scores from logits, and strict parsing of its greedy output.

* ``unsafe_score``: full-vocabulary softmax probability of the ``unsafe`` token at the verdict
  position (after the ``"\\n\\n"`` lead-in for prompts that end at the assistant header);
  ``unsafe_score_pair`` = p_unsafe / (p_safe + p_unsafe) at the same position.
* category scores: for each code in the prompt, the probability that the model lists it first,
  i.e. P(code tokens | prompt, lead-in, ``unsafe\\n``) (product of the conditional probabilities of
  the code's tokens) times ``unsafe_score``. Codes share prefixes (``S1`` = ``S`` ``1``, ``S10`` =
  ``S`` ``10``), so the conditionals are read off a token trie: one continuation per *chain* (a
  maximal trie prefix) gives every distribution needed; for the S-codes there is one chain, ``S``,
  fed in the same forward pass as the verdict (see ``runner``).
* ``parse_output``: ``safe`` or ``unsafe\\nS1,S10`` with codes among the prompt's codes; anything
  else is ``MalformedModelOutput`` (never a silent "safe").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from guard.errors import BadInput, MalformedModelOutput
from guard.models.llama_guard.family import FamilySpec

TokenSeq = tuple[int, ...]


@dataclass(frozen=True)
class VerdictTokens:
    """Token ids scoring and decoding need, resolved once per (tokenizer, family)."""

    safe: int
    unsafe: int
    lead_in: int | None  # the "\n\n" the model writes before its verdict (None: verdict comes first)
    unsafe_line: TokenSeq  # "unsafe\n" as it follows the lead-in (starts with ``unsafe``)
    stop: frozenset[int]  # greedy decode stops at the first of these


def resolve_verdict_tokens(tokenizer, spec: FamilySpec, extra_stop: Sequence[int] = ()) -> VerdictTokens:
    """Look the family's verdict strings up in ``tokenizer``; a mismatch means the wrong family."""
    safe = _single_token(tokenizer, spec.safe_token, spec)
    unsafe = _single_token(tokenizer, spec.unsafe_token, spec)
    lead = _single_token(tokenizer, spec.verdict_lead_in, spec) if spec.verdict_lead_in else None
    line = continuation_ids(tokenizer, spec.verdict_lead_in, spec.unsafe_token + "\n")
    if not line or line[0] != unsafe:
        raise BadInput(f"the tokenizer splits {spec.unsafe_token!r} differently after the lead-in: "
                       f"is this model really {spec.name}? (pass --family)", param="family")
    stop = {tokenizer.convert_tokens_to_ids(t) for t in spec.stop_tokens}
    stop |= set(extra_stop)
    stop.discard(None)
    stop.discard(getattr(tokenizer, "unk_token_id", None))
    return VerdictTokens(safe=safe, unsafe=unsafe, lead_in=lead, unsafe_line=tuple(line),
                         stop=frozenset(int(s) for s in stop if s is not None))


def _single_token(tokenizer, text: str, spec: FamilySpec) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise BadInput(f"{text!r} is not a single token for this tokenizer: is this model really {spec.name}? "
                       f"(pass --family)", param="family")
    return int(ids[0])


def continuation_ids(tokenizer, prefix: str, text: str) -> list[int]:
    """Ids of ``text`` as tokenized after ``prefix`` (the canonical tokenization of the model's
    output ``prefix + text``), checking that ``prefix`` ends on a token boundary."""
    head = tokenizer.encode(prefix, add_special_tokens=False) if prefix else []
    full = tokenizer.encode(prefix + text, add_special_tokens=False)
    if full[: len(head)] != head:
        raise BadInput(f"{text!r} merges with {prefix!r} when tokenized: cannot score it token by token")
    return list(full[len(head):])


# ----------------------------------------------------------------------------- probabilities


def verdict_probabilities(logits: torch.Tensor, tokens: VerdictTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """(unsafe_score, unsafe_score_pair) for rows of verdict-position logits ``[B, V]``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    lp_unsafe = logp[:, tokens.unsafe]
    lp_safe = logp[:, tokens.safe]
    pair = torch.sigmoid(lp_unsafe - lp_safe)  # p_u / (p_s + p_u), stable
    return lp_unsafe.exp(), pair


# ----------------------------------------------------------------------------- category trie


@dataclass(frozen=True)
class CodeTrie:
    """Token sequences of the prompt's category codes as the model would write them after
    ``unsafe\\n``, and the chains (maximal proper prefixes) whose continuations give every
    conditional distribution those sequences need."""

    codes: Mapping[str, TokenSeq]
    chains: tuple[TokenSeq, ...]  # chains[0] is the longest; () alone when every code is one token

    @classmethod
    def build(cls, tokenizer, codes: Sequence[str], after: str) -> CodeTrie:
        seqs = {code: tuple(continuation_ids(tokenizer, after, code)) for code in codes}
        for code, seq in seqs.items():
            if not seq:
                raise BadInput(f"category code {code!r} tokenizes to nothing")
        internal = {seq[:j] for seq in seqs.values() for j in range(len(seq))}
        maximal = [p for p in internal if not any(len(q) > len(p) and q[: len(p)] == p for q in internal)]
        chains = tuple(sorted(maximal, key=lambda p: (-len(p), p)))
        return cls(codes=seqs, chains=chains)

    def prefixes_of_chain(self, chain: TokenSeq) -> list[TokenSeq]:
        """The trie nodes whose next-token distributions a continuation along ``chain`` yields:
        the root (after ``unsafe\\n``) and every prefix of the chain."""
        return [chain[:j] for j in range(len(chain) + 1)]

    def code_probabilities(self, node_logp: Mapping[TokenSeq, torch.Tensor]) -> dict[str, float]:
        """P(code | unsafe\\n) for each code from the log-prob vectors of the trie nodes."""
        out: dict[str, float] = {}
        for code, seq in self.codes.items():
            total = 0.0
            for j, token in enumerate(seq):
                total += float(node_logp[seq[:j]][token])
            out[code] = math.exp(total)
        return out


# ----------------------------------------------------------------------------- parsing

_CODE_LIST = re.compile(r"[^,\s]+(?:,[^,\s]+)*")


def parse_output(output: str, codes: Sequence[str], *, safe: str = "safe", unsafe: str = "unsafe") -> list[str]:
    """Violated codes from the stripped greedy output: ``[]`` for ``safe``; the listed codes for
    ``unsafe\\n<codes>``. Strict (the llama-stack reference format): codes comma-separated without
    spaces, each among the prompt's ``codes``, nothing after the code line; duplicates are dropped.
    Anything else raises ``MalformedModelOutput``."""
    text = output.strip()
    if text == safe:
        return []
    head, sep, rest = text.partition("\n")
    if head != unsafe or not sep:
        raise MalformedModelOutput(f"Llama Guard answered outside its format: {_show(text)}", output=output)
    if not _CODE_LIST.fullmatch(rest):
        raise MalformedModelOutput(f"Llama Guard's category line is not a comma-separated code list: {_show(text)}",
                                   output=output)
    listed = rest.split(",")
    unknown = [c for c in listed if c not in set(codes)]
    if unknown:
        raise MalformedModelOutput(f"Llama Guard listed categor{'y' if len(unknown) == 1 else 'ies'} "
                                   f"{', '.join(unknown)} that the prompt does not contain: {_show(text)}",
                                   output=output)
    return list(dict.fromkeys(listed))


def _show(text: str, limit: int = 80) -> str:
    shown = text if len(text) <= limit else text[: limit - 3] + "..."
    return repr(shown)
