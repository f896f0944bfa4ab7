"""The Llama Guard runner: classify conversations with one batched forward pass.

``LlamaGuardRunner.classify(requests)`` renders and tokenizes each request (``prompt``,
``tokenize``), reuses the cached key/value state of its prompt header (``cache``), runs one forward
per batch of length-sorted requests (``forward``), and turns the logits into scores (``scoring``):

* ``unsafe_score``: P(``unsafe``) over the full vocabulary at the verdict position (after the
  ``"\\n\\n"`` lead-in for prompts that end at the assistant header); ``unsafe_score_pair`` beside it;
* ``category_scores``: P(the code is listed first | ``unsafe\\n``) x ``unsafe_score``, for every code
  in the prompt;
* ``categories`` / ``output``: the greedy output (at most ``max_new_tokens`` = 20 tokens, stop at
  end of turn) and the codes it lists, parsed strictly.

When the greedy decode runs: always when ``request.decode``; otherwise unless the forward already
shows that the greedy output begins with the lead-in followed by ``safe`` (argmax at both
positions). So ``unsafe_score >= 0.5`` always decodes (``unsafe`` is then the argmax), and so does a
model that would answer anything but ``safe`` -- an off-format answer is found and raised as
``MalformedModelOutput``, never reported as safe. A skipped decode gives ``output=None`` and
``categories=[]`` (the greedy answer is ``safe``, up to what follows it). A decoded ``unsafe``
answer lists its codes in ``categories`` even when ``unsafe_score`` is below 0.5 (it can be the
argmax without being a majority): the scores and the greedy answer are reported side by side.
The decode continues from the scoring forward's key/value cache, and where the greedy answer runs
through the ``unsafe`` ``\n`` ``S`` positions that forward already computed, they are not computed
again (``unsafe\nS9`` then costs one decode step).

A conversation longer than the model reads (its context length: the smaller of the model config's
``max_position_embeddings`` and the tokenizer's ``model_max_length``, the prompt header and the room
for the answer included) is never truncated: with ``request.overflow == "split"`` it is judged in
pieces that each fit (``split``), scored in the same batches as everything else and combined into
one result (``pieces`` > 1, the worst piece decides); with ``"refuse"`` it is a ``ContextOverflow``.

Only Llama 3 architectures were run here (LG3 shapes); the Llama 4 path (``llama-guard-4``, chunked
attention layers) is untested.

Thread-safe: one lock serialises use of the model (and its header cache).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from guard.errors import BadInput, ContextOverflow, GuardError
from guard.models.llama_guard.cache import HeaderCache, HeaderKV, compute_headers
from guard.models.llama_guard.family import FamilySpec, get_family, guess_family
from guard.models.llama_guard.forward import BatchForward, Row
from guard.models.llama_guard.prompt import Turn, render_prompt, render_turns
from guard.models.llama_guard.scoring import (
    CodeTrie,
    parse_output,
    resolve_verdict_tokens,
    verdict_probabilities,
)
from guard.models.llama_guard.split import DEFAULT_OVERLAP, combine, split_turns
from guard.models.llama_guard.tokenize import encode_prompt, prompt_length, token_starts
from guard.models.word_cache import disable_word_cache
from guard.types import LlamaGuardRequest, LlamaGuardResult, ModelInfo

MAX_NEW_TOKENS = 20


@dataclass(frozen=True)
class Scores:
    """What the model says about one request, before its output is parsed."""

    unsafe_score: float
    unsafe_score_pair: float
    codes: tuple[str, ...]  # the prompt's category codes, in prompt order
    category_scores: dict[str, float]
    output: str | None  # stripped greedy output; None when the decode was skipped
    latency_ms: float


@dataclass(frozen=True)
class _Prepared:
    index: int
    piece: int  # 0, or which piece of a split conversation
    request: LlamaGuardRequest
    ids: tuple[int, ...]
    header_len: int
    codes: tuple[str, ...]
    trie: CodeTrie


class LlamaGuardRunner:
    """Classifies conversations with one Llama Guard model. ``classify`` is thread-safe."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        family: str,
        info: ModelInfo | None = None,
        max_batch_size: int = 16,
        max_batch_tokens: int = 32768,
        max_padding: float | None = None,
        header_cache: HeaderCache | None = None,
        use_header_cache: bool = True,
        max_new_tokens: int = MAX_NEW_TOKENS,
        split_overlap: int = DEFAULT_OVERLAP,
    ) -> None:
        self.spec: FamilySpec = get_family(family)
        self.family = self.spec.name
        self.model = model.eval()
        self.tokenizer = tokenizer
        disable_word_cache(tokenizer)
        self.info = info or ModelInfo(model=str(getattr(model, "name_or_path", "") or "in-memory"),
                                      family=self.family, device=str(model.device),
                                      dtype=str(model.dtype).removeprefix("torch."))
        self.max_batch_size = max(1, max_batch_size)
        self.max_batch_tokens = max_batch_tokens
        # Padding allowed in a batch, as a fraction of its real tokens: little on a CPU (compute-bound,
        # batching only helps the decode), more on a GPU (a wider batch is nearly free there).
        if max_padding is None:
            max_padding = 0.1 if model.device.type == "cpu" else 1.0
        self.max_padding = max_padding
        self.max_new_tokens = max_new_tokens
        self.split_overlap = split_overlap
        self.use_header_cache = use_header_cache
        self.header_cache = header_cache if header_cache is not None else HeaderCache()
        self.tokens = resolve_verdict_tokens(tokenizer, self.spec, extra_stop=_generation_eos(model))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.tokens.safe
        self._forward = BatchForward(model, self.tokens, pad_id=int(pad))
        self._code_after = self.spec.verdict_lead_in + self.spec.unsafe_token + "\n"
        self.context_length = context_length(model, tokenizer)
        # The longest prompt that leaves room for the verdict, the category suffix and the decode.
        self.max_prompt_tokens = (self.context_length - 1 - len(self.tokens.unsafe_line) - max_new_tokens
                                  if self.context_length else None)
        self._tries: OrderedDict[tuple[str, ...], CodeTrie] = OrderedDict()
        self._lock = threading.Lock()
        self._prep_lock = threading.Lock()

    # ------------------------------------------------------------------ public API

    def classify(self, requests: Sequence[LlamaGuardRequest]) -> list[LlamaGuardResult]:
        """Results in request order; the first failure (bad input, malformed output) is raised."""
        outcomes = self.classify_each(requests)
        for outcome in outcomes:
            if isinstance(outcome, GuardError):
                raise outcome
        return outcomes  # type: ignore[return-value]

    def classify_each(self, requests: Sequence[LlamaGuardRequest]) -> list[LlamaGuardResult | GuardError]:
        """Like ``classify``, but a request that fails yields its ``GuardError`` in its slot, so one
        bad request in a batch does not fail the others. A split conversation fails when any of its
        pieces does."""
        outcomes: list[LlamaGuardResult | GuardError] = []
        for request, (pieces, how) in zip(requests, self._score_pieces(requests)):
            if isinstance(pieces, GuardError):
                outcomes.append(pieces)
                continue
            results = [self._result(request, scores) for scores in pieces]
            failed = next((r for r in results if isinstance(r, GuardError)), None)
            if failed is not None or len(results) == 1:
                outcomes.append(failed or results[0])
            else:
                outcomes.append(combine(results, how or ""))  # type: ignore[arg-type]
        return outcomes

    def score(self, requests: Sequence[LlamaGuardRequest]) -> list[Scores | GuardError]:
        """The model's numbers and raw greedy output per request, before the output is parsed
        (``classify`` parses it; this is for diagnostics, tests and benchmarks). For a split
        conversation, those of its worst piece."""
        return [pieces if isinstance(pieces, GuardError) else max(pieces, key=lambda s: s.unsafe_score)
                for pieces, _ in self._score_pieces(requests)]

    def _score_pieces(self, requests: Sequence[LlamaGuardRequest]) -> list[tuple[list[Scores] | GuardError,
                                                                                    str | None]]:
        """Per request: the scores of each of its pieces (one unless it was split) and how it was
        split, or its error. All pieces of all requests share the batches."""
        started = time.perf_counter()
        outcomes: list[list[Scores] | GuardError] = [[] for _ in requests]
        splits: list[str | None] = [None] * len(requests)
        prepared: list[_Prepared] = []
        for index, request in enumerate(requests):
            try:
                items, splits[index] = self._prepare(index, request)
            except GuardError as exc:
                outcomes[index] = exc
                continue
            prepared.extend(items)
            outcomes[index] = [None] * len(items)  # type: ignore[list-item]
        for batch in self._batches(prepared):
            for item, outcome in zip(batch, self._run_batch(batch, started)):
                outcomes[item.index][item.piece] = outcome  # type: ignore[index]
        return list(zip(outcomes, splits))

    def _result(self, request: LlamaGuardRequest, scores: Scores) -> LlamaGuardResult | GuardError:
        try:
            categories = (parse_output(scores.output, scores.codes, safe=self.spec.safe_token,
                                       unsafe=self.spec.unsafe_token) if scores.output is not None else [])
        except GuardError as exc:
            return exc
        return LlamaGuardResult(
            model=self.info, unsafe_score=scores.unsafe_score, unsafe_score_pair=scores.unsafe_score_pair,
            categories=categories, category_scores=dict(scores.category_scores), output=scores.output,
            latency_ms=scores.latency_ms,
        )

    # ------------------------------------------------------------------ preparation

    def _prepare(self, index: int, request: LlamaGuardRequest) -> tuple[list[_Prepared], str | None]:
        """The prompt(s) of one request: one, or one per piece when it is split (and how)."""
        rendered = render_prompt(request.conversation, self.spec, request.categories, request.excluded)
        with self._prep_lock:
            encoded = encode_prompt(self.tokenizer, rendered)
            codes = tuple(rendered.categories)
            trie = self._trie(codes)
            budget = self.max_prompt_tokens
            if budget is None or len(encoded.ids) <= budget:
                whole = _Prepared(index, 0, request, tuple(encoded.ids), encoded.header_len, codes, trie)
                return [whole], None
            if request.overflow == "refuse":
                raise ContextOverflow(
                    f"the conversation is too long for this model: the prompt is {len(encoded.ids)} tokens "
                    f"and the model reads at most {self.context_length} ({budget} besides its answer)",
                    param="messages")
            measure = _PromptMeasure(self.tokenizer, self.spec, request)
            split = split_turns(rendered.turns, budget, measure, overlap=self.split_overlap)
            items = []
            for piece, turns in enumerate(split.pieces):
                ids = encode_prompt(self.tokenizer, measure.render(turns))
                items.append(_Prepared(index, piece, request, tuple(ids.ids), ids.header_len, codes, trie))
            return items, (f"{split.how} (the prompt is {len(encoded.ids)} tokens, the model reads "
                           f"{self.context_length})")

    def _trie(self, codes: tuple[str, ...]) -> CodeTrie:
        trie = self._tries.get(codes)
        if trie is None:
            trie = CodeTrie.build(self.tokenizer, codes, after=self._code_after)
            self._tries[codes] = trie
            while len(self._tries) > 64:
                self._tries.popitem(last=False)
        return trie

    def _batches(self, prepared: list[_Prepared]) -> list[list[_Prepared]]:
        """Batches of requests sorted by the length the forward sees (after the cached header),
        bounded by count, by padded tokens, and by the padding they would carry: a padded token
        costs as much as a real one, and on a CPU batching saves nothing else in the prefill."""
        ordered = sorted(prepared, key=self._width)
        batches: list[list[_Prepared]] = []
        current: list[_Prepared] = []
        real = 0
        for item in ordered:
            width = self._width(item)  # the longest so far (sorted)
            padded = (len(current) + 1) * width
            if current and (len(current) >= self.max_batch_size or padded > self.max_batch_tokens
                            or padded > (1.0 + self.max_padding) * (real + width)):
                batches.append(current)
                current, real = [], 0
            current.append(item)
            real += width
        if current:
            batches.append(current)
        return batches

    def _width(self, item: _Prepared) -> int:
        return len(item.ids) - (item.header_len if self.use_header_cache else 0)

    # ------------------------------------------------------------------ one batch

    def _run_batch(self, batch: list[_Prepared], started: float) -> list[Scores]:
        with self._lock, torch.inference_mode():
            rows = self._rows(batch)
            scored = self._forward.score(rows)
            self._forward.extra_chains(rows, scored)
            unsafe, pair = verdict_probabilities(scored.verdict_logits, self.tokens)
            to_decode = [i for i, item in enumerate(batch) if self._needs_decode(item, scored, i)]
            generated = self._forward.decode(scored, to_decode, self.max_new_tokens)
            outputs = {i: self.tokenizer.decode(g, skip_special_tokens=True).strip()
                       for i, g in zip(to_decode, generated)}
        latency = (time.perf_counter() - started) * 1000.0
        results = []
        for i, item in enumerate(batch):
            p_unsafe = float(unsafe[i])
            code_p = item.trie.code_probabilities(scored.node_logp[i])
            results.append(Scores(
                unsafe_score=p_unsafe, unsafe_score_pair=float(pair[i]), codes=item.codes,
                category_scores={c: p * p_unsafe for c, p in code_p.items()}, output=outputs.get(i),
                latency_ms=latency,
            ))
        return results

    def _needs_decode(self, item: _Prepared, scored, i: int) -> bool:
        if item.request.decode:
            return True
        if self.tokens.lead_in is not None and int(scored.first_tokens[i]) != self.tokens.lead_in:
            return True
        return int(scored.verdict_logits[i].argmax()) != self.tokens.safe

    def _rows(self, batch: list[_Prepared]) -> list[Row]:
        if not self.use_header_cache:
            return [Row(header=None, body=item.ids, trie=item.trie) for item in batch]
        headers: dict[tuple[int, ...], HeaderKV | None] = {}
        for item in batch:
            key = item.ids[: item.header_len]
            if item.header_len and key not in headers:
                headers[key] = self.header_cache.get(key)
        missing = [key for key, entry in headers.items() if entry is None]
        for entry in compute_headers(self.model, missing):
            headers[entry.ids] = entry
            self.header_cache.put(entry)
        return [Row(header=headers[item.ids[: item.header_len]] if item.header_len else None,
                    body=item.ids[item.header_len:], trie=item.trie) for item in batch]


class _PromptMeasure:
    """Token counts of the prompts of a request's pieces (``split.Measure``); caller holds the
    tokenizer lock."""

    def __init__(self, tokenizer, spec: FamilySpec, request: LlamaGuardRequest) -> None:
        self.tokenizer, self.spec, self.request = tokenizer, spec, request
        self._starts: dict[str, list[int]] = {}

    def render(self, turns: Sequence[Turn]):  # -> RenderedPrompt
        return render_turns(turns, self.spec, self.request.categories, self.request.excluded)

    def cost(self, turns: Sequence[Turn]) -> int:
        return prompt_length(self.tokenizer, self.render(turns))

    def starts(self, text: str) -> list[int]:
        if text not in self._starts:
            self._starts[text] = token_starts(self.tokenizer, text)
        return self._starts[text]


#: transformers' ``model_max_length`` when the tokenizer does not know its model's (``VERY_LARGE_INTEGER``).
_UNSET_LENGTH = 10**20


def context_length(model, tokenizer) -> int:
    """Tokens the model reads: the smaller of the (text) config's ``max_position_embeddings`` and
    the tokenizer's ``model_max_length`` (each when set); 0 when neither says."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    limits = [int(getattr(config, "max_position_embeddings", 0) or 0),
              int(min(getattr(tokenizer, "model_max_length", 0) or 0, _UNSET_LENGTH))]
    known = [limit for limit in limits if 0 < limit < _UNSET_LENGTH]
    return min(known, default=0)


def _generation_eos(model) -> list[int]:
    """The eos ids ``generate`` would stop at (generation config, else model config)."""
    for config in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(config, "eos_token_id", None) if config is not None else None
        if eos is not None:
            return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
    return []


# ---------------------------------------------------------------------- loading


def load_llama_guard(
    model: str,
    *,
    family: str | None = None,
    revision: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    **runner_options,
) -> LlamaGuardRunner:
    """Load a Llama Guard model from a hub id or a local directory.

    The family comes from ``family``, else the config's ``guard_family`` field, else the model's
    name or config (``Llama-Guard-3-1B`` -> ``llama-guard-3-1b``, a Llama 4 config ->
    ``llama-guard-4``); otherwise ``BadInput`` asks for ``--family``. Unreachable weights raise
    ``ModelUnavailable`` with one line.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from guard.models.device import dtype_name, pick_device, pick_dtype
    from guard.models.loading import load_pretrained, resolve_source, resolved_revision

    source = resolve_source(model, revision)
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    config = load_pretrained(AutoConfig, source, what="Llama Guard model")
    name = infer_family(model, config, family)
    tokenizer = load_pretrained(AutoTokenizer, source, what="Llama Guard tokenizer")
    lm = load_pretrained(AutoModelForCausalLM, source, what="Llama Guard model", dtype=torch_dtype)
    lm.to(torch_device).eval()
    info = ModelInfo(model=source.name, revision=resolved_revision(source), family=name,
                     device=str(torch_device), dtype=dtype_name(torch_dtype))
    return LlamaGuardRunner(lm, tokenizer, family=name, info=info, **runner_options)


def infer_family(model: str, config, family: str | None = None) -> str:
    """The family name: explicit, else ``config.guard_family``, else guessed from the name/config."""
    if family:
        return get_family(family).name
    declared = getattr(config, "guard_family", None)
    if declared:
        return get_family(str(declared)).name
    for hint in (model, getattr(config, "_name_or_path", "") or "", getattr(config, "name_or_path", "") or ""):
        guessed = guess_family(str(hint))
        if guessed:
            return guessed
    if str(getattr(config, "model_type", "")).startswith("llama4"):
        return "llama-guard-4"
    raise BadInput(f"cannot tell which Llama Guard family {model!r} is: pass --family "
                   f"(llama-guard-3-1b, llama-guard-3-8b, llama-guard-4, llama-guard-2, llama-guard-1)",
                   param="family")
