"""Bench: the Prompt Guard runner against ``transformers.pipeline("text-classification")``, side by
side, same weights, same texts.

Model: random-init DeBERTa-v2 of the Llama Prompt Guard 2 86M shape (mDeBERTa-v3-base: hidden 768,
12 layers, 12 heads, MLP 3072, vocab 250,105, relative attention with 256 buckets); ``--quick`` uses
the Prompt Guard 2 22M shape (DeBERTa-v3-xsmall: hidden 384, 12 layers, 6 heads, MLP 1536, vocab
128,100). Weights cannot be downloaded here and the cost of a forward does not depend on their values;
the classifier head is aimed, by construction, at the directions in which the random encoder's
pooled outputs vary most on sample texts (their principal components), so that scores spread over
(0, 1) around 0.5 and a wrong column, chunk or padding would flip verdicts. The tokenizer is a real
``DebertaV2Tokenizer`` (Unigram, 32k pieces) trained on the data. Labels BENIGN/MALICIOUS
(``--family 1``: BENIGN/INJECTION/JAILBREAK, with PG1's 512-character chunks and whitespace
preprocessing).

Texts: read at run time from ``../shared/data`` (relative to the repository): three short texts
(xstest, gsm8k, mt_bench, JailbreakBench goals, CyberSecEval injections, BIPIA emails) for every
long one (>= 2,000 characters: GPTFuzz jailbreak templates, JailbreakBench attack prompts,
OpenAI-moderation samples, HarmBench contextual behaviours), picked at an even stride.

What runs, on the short and the long texts separately and together, after a warm-up, ``--rounds``
times with the order of the contenders rotated between groups and rounds (requests per
second of wall time, and per CPU-second of this process: on a box whose cores are shared with other
work, wall time mostly measures the neighbours, so the ratios use CPU time; ``--threads 1`` keeps
torch from spinning on a busy core):
* ``pipeline (truncating)``: ``pipe(texts, truncation=True, max_length=512, top_k=None)`` at the
  pipeline's default batch size 1 -- what a pipeline user gets. It scores only the first 512 tokens
  of a long text; the tail goes unscanned.
* ``pipeline (chunked)``: the same pipeline over the reference helper's chunks of every text, max
  per text, with the chunks starting where the runner's segments start (the reference's own start
  every 512 units; the runner's overlap when it has one): the same coverage as the runner, so the
  same work -- the like-for-like comparison.
* ``runner``: ``PromptGuardRunner.scan`` on all texts at once (segments pooled, length-sorted
  batches with little padding, the lean DeBERTa self-attention of ``attention``), loaded through
  ``load_prompt_guard``; with
  ``--one-by-one`` also one request per ``scan`` (the latency path: only a long text's own segments
  share a batch).

How scores are compared: the chunked pipeline sees exactly the runner's segments, so the final
scores must agree (max |difference| is printed; verdicts at 0.5, 0.9 and the median baseline score
must be identical, else the exit code is 1). The truncating pipeline sees the runner's first segment
when the reference decode/re-encode round trip leaves the first 510 tokens unchanged (the count is
printed); those per-segment scores are compared too. Both sides run in the same dtype, float32 by
default: then the scores agree to ~1e-7 and verdicts are identical. ``--dtype auto`` (bf16 on CPUs
with native bf16, about 2-4x faster for both sides) shows bf16 rounding: the runner pads a batch
to its longest segment and a different matrix shape rounds differently, so scores differ by up to
~1e-2 and a verdict sitting on a threshold can flip. ``--baseline-dtype float32 --dtype auto``
compares the runner's default dtype with the pipeline's default.

    python -m bench prompt_guard --quick --threads 1     # 22M shape, a few minutes on 2 busy cores
    python -m bench prompt_guard --threads 1             # 86M shape, 20-40 minutes on 2 busy cores
    python -m bench prompt_guard --threads 1 --dtype auto                          # both in bf16
    python -m bench prompt_guard --threads 1 --dtype auto --baseline-dtype float32 # runner bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Tokenizer, pipeline
from transformers.utils import logging as hf_logging

from guard.models.device import dtype_name, pick_dtype
from guard.models.prompt_guard import PromptGuardRunner, load_prompt_guard
from guard.models.prompt_guard.chunking import MAX_CHARS, MAX_TOKENS
from guard.models.prompt_guard.preprocess import preprocess_pg1
from guard.types import PromptGuardRequest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

SHAPES = {
    "86m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                vocab_size=250105),
    "22m": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                vocab_size=128100),
}
LABELS = {1: {0: "BENIGN", 1: "INJECTION", 2: "JAILBREAK"}, 2: {0: "BENIGN", 1: "MALICIOUS"}}
SHORT_SOURCES = [
    "xstest/xstest_prompts.jsonl", "gsm8k/test_questions.jsonl", "mt_bench/questions.jsonl",
    "jailbreakbench_artifacts/behaviors.jsonl", "purplellama_cyberseceval/prompt_injection.jsonl",
    "bipia_email_injection/email_injection.jsonl",
]
LONG_SOURCES = [
    "gptfuzz/jailbreak_templates.jsonl", "jailbreakbench_artifacts/attack_prompts.jsonl",
    "openai_moderation/samples.jsonl", "harmbench/harmbench_behaviors_text_all.jsonl",
]
LONG_CHARS = 2000


# ----------------------------------------------------------------------------- data


def _texts_of(relative: str) -> list[str]:
    path = DATA / relative
    if not path.exists():
        sys.exit(f"bench: {path} not found (the shared data must sit beside the repository)")
    with path.open(encoding="utf-8") as handle:
        return [row["text"] for row in map(json.loads, filter(str.strip, handle)) if row["text"].strip()]


def _round_robin(pools: list[list[str]], n: int) -> list[str]:
    per_pool = -(-n // len(pools))
    picked = [[pool[(i * len(pool)) // per_pool] for i in range(per_pool)] for pool in pools]
    return [picked[i % len(pools)][i // len(pools)] for i in range(n)]


def load_texts(n: int) -> list[str]:
    """``n`` texts, one long (>= 2,000 characters) for every three short ones, interleaved."""
    n_long = n // 4
    short = _round_robin([[t for t in _texts_of(s) if len(t) < LONG_CHARS] for s in SHORT_SOURCES],
                         n - n_long)
    long = _round_robin([[t for t in _texts_of(s) if len(t) >= LONG_CHARS] for s in LONG_SOURCES], n_long)
    texts = []
    for i in range(n):
        texts.append(long.pop(0) if (i % 4 == 3 and long) else short.pop(0) if short else long.pop(0))
    return texts


def corpus() -> list[str]:
    return [t for relative in SHORT_SOURCES + LONG_SOURCES for t in _texts_of(relative)]


# ----------------------------------------------------------------------------- model


def build_tokenizer(vocab_size: int) -> DebertaV2Tokenizer:
    backend = Tokenizer(models.Unigram())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="[UNK]",
                                      show_progress=False)
    backend.train_from_iterator(corpus(), trainer)
    vocab = [tuple(piece) for piece in json.loads(backend.to_str())["model"]["vocab"]]
    return DebertaV2Tokenizer(vocab=vocab)


def build_model(out_dir: Path, shape: str, family: int, tokenizer: DebertaV2Tokenizer) -> Path:
    labels = LABELS[family]
    config = DebertaV2Config(
        **SHAPES[shape], max_position_embeddings=512, relative_attention=True, position_buckets=256,
        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
        position_biased_input=False, type_vocab_size=0, max_relative_positions=-1,
        pad_token_id=tokenizer.pad_token_id,
        id2label=labels, label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(config).eval()
    aim_head(model, tokenizer, corpus()[::97][:32], family)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@torch.inference_mode()
def aim_head(model: DebertaV2ForSequenceClassification, tokenizer, texts: list[str], family: int,
             spread: float = 2.0) -> None:
    """Point the attack class(es) at the top principal components of the pooled outputs of
    ``texts``, centred, so that the logit margin has a standard deviation of ``spread``."""
    inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
    pooled = model.pooler(model.deberta(**inputs).last_hidden_state).float()
    mean = pooled.mean(dim=0)
    _, _, components = torch.linalg.svd(pooled - mean, full_matrices=False)
    weight = torch.zeros_like(model.classifier.weight)
    bias = torch.zeros_like(model.classifier.bias)
    for k, label in enumerate(range(1, len(LABELS[family]))):
        direction = components[k]
        scale = spread / ((pooled - mean) @ direction).std()
        weight[label] = scale * direction
        bias[label] = -scale * (mean @ direction)
    model.classifier.weight.copy_(weight)
    model.classifier.bias.copy_(bias)


# ----------------------------------------------------------------------------- the contenders


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process (steadier than wall time when others share the cores)
    scores: list[float]  # jailbreak score per text (PG2: p[MALICIOUS])

    def __add__(self, other: Run) -> Run:
        return Run(self.wall + other.wall, self.cpu + other.cpu, self.scores + other.scores)


class _Clock:
    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def _label_score(row: list[dict], family: int) -> float:
    probs = {d["label"]: d["score"] for d in row}
    return probs["MALICIOUS"] if family == 2 else probs["JAILBREAK"]


def segment_starts_of(runner: PromptGuardRunner, texts: list[str], family: int) -> list[list[int]]:
    """Where each of the runner's segments of each text starts (PG1: characters, PG2: tokens of the
    whole text), so that the chunked pipeline scores exactly the runner's segments, whatever their
    overlap. Planned before the clock starts: it is not the baseline's work."""
    step = (MAX_CHARS if family == 1 else MAX_TOKENS) - int(getattr(runner, "overlap", 0) or 0)
    starts: list[list[int]] = [[] for _ in texts]
    for segment in runner.segment(texts):
        starts[segment.request].append(segment.index * step)
    return starts


def reference_chunks(texts: list[str], tokenizer, family: int, starts: list[list[int]]) -> list[list[str]]:
    """What the reference helper feeds the model, per text (PG1 chunks already preprocessed), with
    chunks starting at ``starts`` (the reference's own are every 512 units)."""
    if family == 1:
        return [[preprocess_pg1(t[i:i + MAX_CHARS], tokenizer) for i in at] for t, at in zip(texts, starts)]
    out = []
    for text, at in zip(texts, starts):
        ids = tokenizer(text, truncation=False, verbose=False)["input_ids"]
        out.append(tokenizer.batch_decode([ids[i:i + MAX_TOKENS] for i in at], skip_special_tokens=True))
    return out


def run_pipeline_truncating(pipe, texts: list[str], family: int, batch_size: int) -> Run:
    with _Clock() as clock:
        rows = pipe(texts, truncation=True, max_length=MAX_TOKENS, top_k=None, batch_size=batch_size)
    return Run(clock.wall, clock.cpu, [_label_score(r, family) for r in rows])


def run_pipeline_chunked(pipe, texts: list[str], family: int, batch_size: int, starts: list[list[int]]) -> Run:
    with _Clock() as clock:
        chunks = reference_chunks(texts, pipe.tokenizer, family, starts)
        flat = [c for per_text in chunks for c in per_text]
        rows = iter(pipe(flat, truncation=True, max_length=MAX_TOKENS, top_k=None, batch_size=batch_size))
        scores = [max((_label_score(next(rows), family) for _ in per_text), default=0.0)
                  for per_text in chunks]
    return Run(clock.wall, clock.cpu, scores)


def run_runner(runner: PromptGuardRunner, texts: list[str], one_by_one: bool = False) -> Run:
    requests = [PromptGuardRequest(text=t) for t in texts]
    with _Clock() as clock:
        if one_by_one:
            results = [runner.scan([r])[0] for r in requests]
        else:
            results = runner.scan(requests)
    return Run(clock.wall, clock.cpu, [r.jailbreak_score for r in results])


def first_segment_scores(runner: PromptGuardRunner, texts: list[str]) -> tuple[list[int], list[float]]:
    """Indices of texts whose first runner segment is exactly the pipeline's truncated input, and
    the runner's score of that segment."""
    segments = runner.segment(texts)
    scores = runner.score_segments(segments).jailbreak
    firsts = {s.request: (k, s) for k, s in enumerate(segments) if s.index == 0}
    truncated = runner.tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    same = [i for i in range(len(texts)) if i in firsts and firsts[i][1].input_ids == truncated[i]]
    return same, [scores[firsts[i][0]] for i in same]


# ----------------------------------------------------------------------------- report


def verdict_mismatches(a: list[float], b: list[float], threshold: float) -> int:
    return sum((x >= threshold) != (y >= threshold) for x, y in zip(a, b, strict=True))


def _rate(n: int, run: Run) -> str:
    return f"{n / run.wall:>7.2f} req/s {n / run.cpu:>7.2f} req/CPU-s"


def _table(groups: dict[str, list[str]], runs: dict[str, dict[str, Run]]) -> None:
    """One row per contender: wall and CPU rates per group, and the runner's advantage (CPU time)."""
    ours = runs["runner"]
    header = "".join(f" | {f'{name} ({len(texts)})':^38} {'runner is':>9}" for name, texts in groups.items())
    print(f"  {'':<32}{header}")
    for label, by_group in runs.items():
        cells = ""
        for name, texts in groups.items():
            run = by_group[name]
            ratio = "" if label == "runner" else f"{run.cpu / ours[name].cpu:>8.2f}x"
            cells += f" | {_rate(len(texts), run)} {ratio:>9}"
        print(f"  {label:<32}{cells}", flush=True)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench prompt_guard",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Prompt Guard 2 22M shape")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None)
    parser.add_argument("--family", type=int, choices=(1, 2), default=2)
    parser.add_argument("-n", "--texts", type=int, default=None)
    parser.add_argument("--dtype", default="float32", help="dtype of both sides (auto = bf16 where native)")
    parser.add_argument("--baseline-dtype", default=None, help="pipeline dtype if different (e.g. float32)")
    parser.add_argument("--batch-size", type=int, default=16, help="runner: segments per batch")
    parser.add_argument("--pipeline-batch-size", type=int, default=1,
                        help="pipeline batch size (its default is 1)")
    parser.add_argument("--no-chunked", action="store_true", help="skip the chunked-pipeline baseline")
    parser.add_argument("--one-by-one", action="store_true", help="also time the runner one request per scan")
    parser.add_argument("--rounds", type=int, default=2, help="repeat every contender, rotating the order")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (default: torch's; 1 is steadier on a shared box)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    shape = args.shape or ("22m" if args.quick else "86m")
    dtype = pick_dtype(args.dtype, torch.device("cpu"))
    baseline_dtype = pick_dtype(args.baseline_dtype or args.dtype, torch.device("cpu"))
    texts = load_texts((args.texts or (48 if shape == "22m" else 40)) + 2)
    warmup, texts = texts[:2], texts[2:]

    started = time.perf_counter()
    tokenizer = build_tokenizer(32000)
    with tempfile.TemporaryDirectory(prefix="guard-bench-pg-") as tmp:
        model_dir = build_model(Path(tmp), shape, args.family, tokenizer)
        runner = load_prompt_guard(str(model_dir), dtype=dtype_name(dtype), device="cpu",
                                   max_batch_size=args.batch_size)
        pipe = pipeline("text-classification", model=str(model_dir), device="cpu", dtype=baseline_dtype)
    _describe(args, shape, runner, texts, baseline_dtype, time.perf_counter() - started)

    run_pipeline_truncating(pipe, warmup, args.family, args.pipeline_batch_size)
    run_runner(runner, warmup)
    groups = {"short": [t for t in texts if len(t) < LONG_CHARS],
              "long": [t for t in texts if len(t) >= LONG_CHARS]}
    print(f"  load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    runs, per_round = timed_rounds(_contenders(args, runner, pipe), groups, args.rounds)
    for by_group in runs.values():
        by_group["all"] = by_group["short"] + by_group["long"]
    _table({**groups, "all": groups["short"] + groups["long"]}, runs)
    print(f"  (mean of {args.rounds} rounds; ratios use CPU time; the truncating pipeline scores only the first "
          f"512 tokens of a long text, so on long texts it does less work than the runner: compare with the "
          f"chunked pipeline for like for like)")
    for label in per_round[0]:
        print(f"  per round, {label} / runner (CPU time, all texts): "
              + ", ".join(f"{ratios[label]:.2f}x" for ratios in per_round))
    print(f"  load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return _check(runner, groups["short"] + groups["long"], runs["runner"]["all"],
                  runs["pipeline, truncating (default)"]["all"], runs.get(CHUNKED, {}).get("all"))


CHUNKED = "pipeline, same chunks as runner"


def timed_rounds(contenders: dict, groups: dict[str, list[str]], rounds: int
                 ) -> tuple[dict[str, dict[str, Run]], list[dict[str, float]]]:
    """Every contender on every group of texts, ``rounds`` times, the order of the contenders
    rotated from group to group and from round to round (the cores are shared: a change of load
    then hits every contender alike). Returns the mean run per contender and group (scores of the
    first round) and, per round, each baseline's CPU time over the runner's on all texts."""
    labels = list(contenders)
    totals: dict[str, dict[str, Run]] = {label: {} for label in labels}
    per_round = []
    for round_ in range(rounds):
        spent = dict.fromkeys(labels, 0.0)
        for g, (name, texts) in enumerate(groups.items()):
            shift = (round_ + g) % len(labels)
            for label in labels[shift:] + labels[:shift]:
                run = contenders[label](texts)
                spent[label] += run.cpu
                old = totals[label].get(name)
                totals[label][name] = run if old is None else Run(old.wall + run.wall, old.cpu + run.cpu, old.scores)
        per_round.append({label: spent[label] / spent["runner"] for label in labels if label != "runner"})
    means = {label: {name: Run(r.wall / rounds, r.cpu / rounds, r.scores) for name, r in by_group.items()}
             for label, by_group in totals.items()}
    return means, per_round


def _contenders(args: argparse.Namespace, runner: PromptGuardRunner, pipe) -> dict:
    contenders = {"runner": lambda ts: run_runner(runner, ts)}
    if args.one_by_one:
        contenders["runner, one request at a time"] = lambda ts: run_runner(runner, ts, one_by_one=True)
    contenders["pipeline, truncating (default)"] = lambda ts: run_pipeline_truncating(
        pipe, ts, args.family, args.pipeline_batch_size)
    if not args.no_chunked:
        contenders[CHUNKED] = lambda ts: run_pipeline_chunked(pipe, ts, args.family, args.pipeline_batch_size,
                                                              segment_starts_of(runner, ts, args.family))
    return contenders


def _describe(args: argparse.Namespace, shape: str, runner: PromptGuardRunner, texts: list[str],
              baseline_dtype: torch.dtype, setup: float) -> None:
    segments = runner.segment(texts)
    lengths = [len(t) for t in texts]
    cfg = SHAPES[shape]
    print(f"Prompt Guard {args.family} bench: shape {shape} (hidden {cfg['hidden_size']}, "
          f"{cfg['num_hidden_layers']} layers, vocab {cfg['vocab_size']}), runner {runner.info.dtype}, "
          f"pipeline {dtype_name(baseline_dtype)}, {torch.get_num_threads()} threads, set-up {setup:.0f} s")
    print(f"{len(texts)} texts from ../shared/data: {sum(x >= LONG_CHARS for x in lengths)} long; "
          f"chars median {statistics.median(lengths):.0f}, max {max(lengths)}; "
          f"{len(segments)} runner segments (overlap {getattr(runner, 'overlap', 0)}), "
          f"tokens per segment median {statistics.median(len(s.input_ids) for s in segments):.0f}; "
          f"runner batch {args.batch_size}, pipeline batch {args.pipeline_batch_size}")


def _check(runner: PromptGuardRunner, texts: list[str], ours: Run, truncating: Run,
           chunked: Run | None) -> int:
    same, firsts = first_segment_scores(runner, texts)
    diffs = [abs(firsts[k] - truncating.scores[i]) for k, i in enumerate(same)]
    print(f"  truncating pipeline vs runner's first segment: {len(same)}/{len(texts)} texts see identical "
          f"ids; max |score diff| {max(diffs, default=0.0):.2e}")
    failed = False
    if chunked:
        diff = max(abs(a - b) for a, b in zip(ours.scores, chunked.scores, strict=True))
        median = statistics.median(chunked.scores)
        counts = {t: verdict_mismatches(ours.scores, chunked.scores, t) for t in (0.5, 0.9, median)}
        flagged = sum(s >= median for s in chunked.scores)
        print(f"  chunked pipeline vs runner: max |score diff| {diff:.2e}; verdict mismatches at 0.5: "
              f"{counts[0.5]}, 0.9: {counts[0.9]}, median {median:.3f} ({flagged} flagged): {counts[median]}")
        failed = any(counts.values())
    scores = sorted(ours.scores)
    print(f"  runner scores: min {scores[0]:.3f}, median {statistics.median(scores):.3f}, "
          f"max {scores[-1]:.3f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
