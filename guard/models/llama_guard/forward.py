"""One batched forward pass that yields the verdict, the category distributions and a decode start.

Layout of row i (``h_i`` = its cached header length, ``H`` = the longest in the batch):

    past (header cache):  [ header_i ........ | pad ]                    width H
    input ids:            [ pad | body_i + lead-in | unsafe\\n | chain_i | pad ]

The body (the prompt after the cached header, plus the ``"\\n\\n"`` lead-in) is *left*-padded so
that every row's lead-in sits in the same column; after it comes the category suffix
``unsafe\\n`` + the row's first trie chain (``S`` for the S-codes), right-padded to a common width.
Padding columns are masked and positions are explicit (``h_i``, ``h_i + 1``, ...), so each row
computes exactly what it would alone. Because attention is causal, the suffix does not change the
logits at the lead-in: the verdict, the first greedy token and every category distribution come
out of the same forward. Cropping the suffix off the key/value cache leaves every row ending at its
lead-in, which is where the greedy decode continues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from guard.models.cache_arg import cache_kwargs
from guard.models.llama_guard.cache import HeaderKV, stack_headers
from guard.models.llama_guard.scoring import CodeTrie, TokenSeq, VerdictTokens


@dataclass(frozen=True)
class Row:
    header: HeaderKV | None  # cached header state (None: the whole prompt is in ``body``)
    body: Sequence[int]  # prompt ids after the header
    trie: CodeTrie


@dataclass
class Scored:
    """What the scoring forward produced, per row."""

    verdict_logits: torch.Tensor  # [B, V] at the verdict position
    first_tokens: torch.Tensor  # [B] greedy first generated token (the lead-in when the model agrees)
    node_logp: list[dict[TokenSeq, torch.Tensor]]  # per row: trie prefix -> log-probs over the vocab
    # decode state
    cache: DynamicCache
    mask: torch.Tensor  # [B, past + input] attention mask
    positions: torch.Tensor  # [B] position of the lead-in (or of the last prompt token)
    suffix_width: int  # len(unsafe\n) + chain_width
    chain_width: int
    # Greedy token after each kept position ([pre-lead-in,] verdict, suffix), and each row's real
    # suffix tokens: where the greedy answer follows the suffix, the decode reuses its positions.
    greedy: torch.Tensor  # [B, keep]
    verdict_at: int
    suffixes: list[list[int]]


class BatchForward:
    def __init__(self, model, tokens: VerdictTokens, pad_id: int) -> None:
        self.model = model
        self.tokens = tokens
        self.pad_id = pad_id
        self.device = model.device

    # ------------------------------------------------------------------ scoring pass

    def score(self, rows: Sequence[Row]) -> Scored:
        tokens = self.tokens
        lead = [tokens.lead_in] if tokens.lead_in is not None else []
        line = list(tokens.unsafe_line)
        chains = [row.trie.chains[0] if row.trie.chains else () for row in rows]
        chain_width = max(len(c) for c in chains)
        suffix_width = len(line) + chain_width
        bodies = [list(row.body) + lead for row in rows]
        body_width = max(len(b) for b in bodies)
        width = body_width + suffix_width
        n = len(rows)

        past, header_lens = stack_headers(self.model, [row.header for row in rows])
        past_width = max(header_lens, default=0)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, past_width + width), dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        for i, (body, chain, h) in enumerate(zip(bodies, chains, header_lens)):
            real = body + line + list(chain)
            start = body_width - len(body)
            ids[i, start : start + len(real)] = torch.tensor(real)
            mask[i, :h] = 1
            mask[i, past_width + start : past_width + start + len(real)] = 1
            pos[i, start : start + len(real)] = torch.arange(h, h + len(real))
            pos[i, :start] = h  # padding: any in-range position, masked anyway
            pos[i, start + len(real) :] = h + len(real) - 1
        cache = past if past is not None else DynamicCache(config=self.model.config)
        keep = suffix_width + 1 + len(lead)  # [pre-lead-in,] verdict, suffix positions
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), **cache_kwargs(self.model, cache), use_cache=True,
                         logits_to_keep=keep)
        logits = out.logits.float()  # [B, keep, V]
        verdict_at = len(lead)
        root_at = verdict_at + len(line)
        node_logp = []
        for i, chain in enumerate(chains):
            logp = torch.log_softmax(logits[i, root_at : root_at + len(chain) + 1], dim=-1)
            node_logp.append({chain[:m]: logp[m] for m in range(len(chain) + 1)})
        verdict_logits = logits[:, verdict_at]
        first = logits[:, 0].argmax(dim=-1)
        lead_pos = pos[:, body_width - 1].to(self.device)
        return Scored(verdict_logits=verdict_logits, first_tokens=first, node_logp=node_logp, cache=cache,
                      mask=mask.to(self.device), positions=lead_pos, suffix_width=suffix_width,
                      chain_width=chain_width, greedy=logits.argmax(dim=-1).cpu(), verdict_at=verdict_at,
                      suffixes=[line + list(chain) for chain in chains])

    # ------------------------------------------------------------------ further trie chains

    def extra_chains(self, rows: Sequence[Row], scored: Scored) -> None:
        """Distributions for the trie chains beyond the first (custom code sets whose codes do not
        share one prefix): one more forward over copies of the cache up to ``unsafe\\n``. Adds
        to ``scored.node_logp`` in place; must run before ``decode`` (which crops the cache)."""
        jobs = [(i, chain) for i, row in enumerate(rows) for chain in row.trie.chains[1:]]
        if not jobs:
            return
        keep_cols = scored.cache.get_seq_length() - scored.chain_width  # up to and including unsafe\n
        index = torch.tensor([i for i, _ in jobs], device=self.device)
        layers = [(k[:, :, :keep_cols].index_select(0, index), v[:, :, :keep_cols].index_select(0, index))
                  for k, v in ((layer.keys, layer.values) for layer in scored.cache.layers)]
        cache = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        width = max(len(chain) for _, chain in jobs)
        ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)
        add_mask = torch.zeros((len(jobs), width), dtype=torch.long)
        root_pos = scored.positions.index_select(0, index).cpu() + len(self.tokens.unsafe_line)
        pos = torch.zeros((len(jobs), width), dtype=torch.long)
        for j, (_, chain) in enumerate(jobs):
            ids[j, : len(chain)] = torch.tensor(chain)
            add_mask[j, : len(chain)] = 1
            pos[j] = root_pos[j] + 1 + torch.arange(width).clamp(max=len(chain) - 1)
        mask = torch.cat([scored.mask[:, :keep_cols].index_select(0, index), add_mask.to(self.device)], dim=1)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask, position_ids=pos.to(self.device),
                         **cache_kwargs(self.model, cache), use_cache=True)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        for j, (i, chain) in enumerate(jobs):
            for m in range(1, len(chain) + 1):
                scored.node_logp[i][chain[:m]] = logp[j, m - 1]

    # ------------------------------------------------------------------ greedy decode

    def _agreement(self, scored: Scored, row: int, generated: list[int], max_new_tokens: int) -> int:
        """How many suffix positions row ``row``'s greedy answer runs through: while the last token
        generated equals the next suffix token, the greedy token after it is already known."""
        suffix = scored.suffixes[row]
        depth, last = 0, generated[-1]
        while (depth < len(suffix) and last == suffix[depth] and last not in self.tokens.stop
               and len(generated) + depth < max_new_tokens):
            last = int(scored.greedy[row, scored.verdict_at + 1 + depth])
            depth += 1
        return depth

    def decode(self, scored: Scored, rows: Sequence[int], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuation for the given row indices, as ``generate(do_sample=False)`` would
        produce it from the prompt (the lead-in included when the model writes it); stops at a stop
        token or after ``max_new_tokens``. Consumes ``scored.cache``."""
        if not rows:
            return []
        tokens = self.tokens
        index = torch.tensor(list(rows), device=self.device)
        cache = scored.cache
        cache.batch_select_indices(index)
        mask = scored.mask.index_select(0, index)
        last_pos = scored.positions.index_select(0, index)
        first = scored.first_tokens.index_select(0, index)
        verdict = scored.verdict_logits.index_select(0, index).argmax(dim=-1)
        if tokens.lead_in is not None and not bool((first == tokens.lead_in).all()):
            # some row would not write the lead-in: restart every row from the prompt's end
            drop = scored.suffix_width + 1
            cache.crop(-drop)
            mask, last_pos = mask[:, :-drop], last_pos - 1
            generated = [[int(t)] for t in first]
        else:
            lead = [tokens.lead_in] if tokens.lead_in is not None else []
            generated = [lead + [int(t)] for t in verdict]
            # Follow each row's greedy answer along the suffix already in the cache (``unsafe`` ``\n``
            # ``S`` ...), as far as every row agrees with it: those steps need no forward.
            depth = min(self._agreement(scored, r, generated[k], max_new_tokens) for k, r in enumerate(rows))
            for k, r in enumerate(rows):
                generated[k] += scored.greedy[r, scored.verdict_at + 1 : scored.verdict_at + 1 + depth].tolist()
            drop = scored.suffix_width - depth
            if drop:
                cache.crop(-drop)
                mask = mask[:, :-drop]
            last_pos = last_pos + depth
        active = [r for r, g in enumerate(generated) if g[-1] not in tokens.stop and len(g) < max_new_tokens]
        if len(active) < len(rows):
            sel = torch.tensor(active, device=self.device)
            cache.batch_select_indices(sel)
            mask, last_pos = mask.index_select(0, sel), last_pos.index_select(0, sel)
        while active:
            feed = torch.tensor([[generated[r][-1]] for r in active], device=self.device)
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            last_pos = last_pos + 1
            out = self.model(input_ids=feed, attention_mask=mask, position_ids=last_pos[:, None],
                             **cache_kwargs(self.model, cache), use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1].argmax(dim=-1).tolist()
            still = []
            for slot, (r, token) in enumerate(zip(active, nxt)):
                generated[r].append(int(token))
                if token not in tokens.stop and len(generated[r]) < max_new_tokens:
                    still.append(slot)
            if len(still) < len(active):
                sel = torch.tensor(still, device=self.device, dtype=torch.long)
                if still:
                    cache.batch_select_indices(sel)
                mask, last_pos = mask.index_select(0, sel), last_pos.index_select(0, sel)
                active = [active[s] for s in still]
        return generated
