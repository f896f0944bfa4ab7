"""Bench: the Llama Guard runner against the naive reference, side by side, same model, same data.

* naive: per conversation, ``tokenizer.apply_chat_template`` (the LG3-1B HF template, read from
  ``../shared/reference/chat_templates``) + ``model.generate(do_sample=False, max_new_tokens=20)``,
  batch 1, then the output is parsed;
* runner: ``LlamaGuardRunner.classify_each`` on all conversations (header KV cache, length-sorted
  batches, one forward for verdict + category scores, greedy decode only when the answer is not
  ``safe``). Its header cache starts empty in the timed run, so the one-time header cost is counted.

Model: random-init Llama of the Llama Guard 3 1B shape (``--shape 1b``: hidden 2048, 16 layers,
32/8 heads, MLP 8192, vocab 128256; ``--quick`` uses a small shape). Weights cannot be downloaded
here, and the cost of a forward does not depend on the weight values, so the model is given a
deterministic Llama-Guard-like behaviour by construction instead of training: the layers' output
projections are damped so that the residual stream is dominated by the current token's embedding,
and rows of the (untied) output head are aimed at token embeddings so that greedy decoding follows
a planted answer (``\\n\\nsafe<|eot_id|>`` or ``\\n\\nunsafe\\nS1<|eot_id|>``). Each answer is run
in turn on the same conversations; "mixed" is the two together (half safe, half unsafe traffic).
The tokenizer is a byte-level BPE (Llama 3 split rule and special tokens) trained on the data.

Conversations: user prompts from mt_bench, gsm8k, xstest, advbench, openai_moderation, ailuminate
and user+agent pairs from self_instruct, round-robin, text cut at ``--max-chars``, read at run time
from ``../shared/data`` (relative to the repository).

Verdicts must be identical: the naive output parsed vs the runner's categories (and, where the
runner decoded, the outputs must be equal strings). Usage::

    python -m bench llama_guard --quick          # small shape, 32 conversations x 3 rounds, ~2 minutes
    python -m bench llama_guard                  # LG3-1B shape, 16 conversations x 2 rounds, ~5 minutes

Naive and runner alternate chunk by chunk (the cores are shared with whatever else runs); the load
average is printed before and after, and each round's ratio beside the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from guard.errors import GuardError
from guard.models.device import dtype_name, pick_dtype
from guard.models.llama_guard.prompt import render_prompt
from guard.models.llama_guard.runner import LlamaGuardRunner
from guard.models.llama_guard.scoring import parse_output
from guard.models.llama_guard.tokenize import encode_prompt
from guard.models.testing import vocab
from guard.types import LlamaGuardRequest, Message

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FAMILY = "llama-guard-3-1b"
TEMPLATE = SHARED / "reference" / "chat_templates" / "llama-guard-3-1b.jinja"

SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),
    "small": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, vocab_size=32000),
}
ANSWERS = {"safe": "\n\nsafe" + vocab.EOT, "unsafe": "\n\nunsafe\nS1" + vocab.EOT}
USER_SOURCES = [
    "mt_bench/questions.jsonl", "gsm8k/test_questions.jsonl", "xstest/xstest_prompts.jsonl",
    "advbench/harmful_behaviors.jsonl", "openai_moderation/samples.jsonl", "ailuminate_demo/demo_en_us.jsonl",
]
PAIR_SOURCE = "self_instruct/instructions.jsonl"
# Scale of the layers' output projections: small enough that the final hidden state points at the
# current token's embedding (planted answers then win greedy decoding by a wide margin, in bf16 too).
DAMP = 0.002


# ----------------------------------------------------------------------------- data


def _rows(relative: str) -> list[dict]:
    path = SHARED / "data" / relative
    if not path.exists():
        sys.exit(f"bench: {path} not found (the shared data must sit beside the repository)")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_conversations(n: int, max_chars: int) -> list[list[Message]]:
    """``n`` conversations, round-robin over the sources, each source read at an even stride."""
    pools: list[list[list[Message]]] = []
    for relative in USER_SOURCES:
        pools.append([[Message(role="user", content=r["text"][:max_chars])] for r in _rows(relative)
                      if r.get("role") == "user" and r["text"].strip()])
    pairs = {}
    for row in _rows(PAIR_SOURCE):
        key, _, side = row["id"].rpartition("-")
        pairs.setdefault(key, {})[side] = row["text"][:max_chars]
    pools.append([[Message(role="user", content=p["user"]), Message(role="assistant", content=p["agent"])]
                  for p in pairs.values() if p.get("user", "").strip() and p.get("agent", "").strip()])
    per_pool = -(-n // len(pools))
    picked = [[pool[(i * len(pool)) // per_pool] for i in range(per_pool)] for pool in pools]
    return [picked[i % len(pools)][i // len(pools)] for i in range(n)]


def corpus_texts(limit: int = 4000) -> list[str]:
    texts = []
    for relative in USER_SOURCES + [PAIR_SOURCE]:
        texts += [r["text"] for r in _rows(relative)[: limit // 7]]
    return texts


# ----------------------------------------------------------------------------- model


def build_tokenizer(conversations: list[list[Message]], vocab_size: int):
    prompts = [render_prompt(c, FAMILY).text for c in conversations[:8]]
    answers = [a.replace(vocab.EOT, "") for a in ANSWERS.values()] * 200
    tokenizer = vocab.llama3_tokenizer(corpus_texts() + prompts * 4 + answers, vocab_size=vocab_size)
    tokenizer.chat_template = TEMPLATE.read_text(encoding="utf-8")
    return tokenizer


def build_model(shape: str, tokenizer, dtype: torch.dtype) -> LlamaForCausalLM:
    eot = tokenizer.convert_tokens_to_ids(vocab.EOT)
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=131072, rope_theta=500000.0,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=[tokenizer.convert_tokens_to_ids(vocab.END_OF_TEXT), eot],
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with torch.no_grad():
        for layer in model.model.layers:  # the residual stream keeps the current token's embedding
            layer.self_attn.o_proj.weight.mul_(DAMP)
            layer.mlp.down_proj.weight.mul_(DAMP)
    return model


@torch.no_grad()
def plant_answer(model: LlamaForCausalLM, tokenizer, answer: str, sign: float = 1.0, strength: float = 60.0) -> None:
    """Aim output-head rows so that greedy decoding after the assistant header writes ``answer``
    (``sign=-1`` removes a planted answer)."""
    chain = [tokenizer.convert_tokens_to_ids("<|end_header_id|>")] + tokenizer.encode(answer, add_special_tokens=False)
    embed = model.model.embed_tokens.weight.float()
    head = model.lm_head.weight
    for src, dst in zip(chain, chain[1:]):
        direction = embed[src] / embed[src].norm()
        head[dst] += (sign * strength * direction / embed.shape[1] ** 0.5).to(head.dtype)


# ----------------------------------------------------------------------------- the two pipelines


@dataclass
class Run:
    seconds: float
    verdicts: list[tuple]
    outputs: list[str | None]


def verdict_of(output: str | None, codes) -> tuple:
    if output is None:
        return ("safe",)
    try:
        listed = parse_output(output, codes)
    except GuardError:
        return ("malformed", output)
    return ("unsafe", *listed) if listed else ("safe",)


def run_naive(model, tokenizer, conversations) -> Run:
    codes = [f"S{i}" for i in range(1, 14)]
    verdicts, outputs = [], []
    started = time.perf_counter()
    for conversation in conversations:
        messages = [{"role": m.role, "content": [{"type": "text", "text": m.text}]} for m in conversation]
        inputs = tokenizer.apply_chat_template(messages, tokenize=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=20)
        text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        outputs.append(text)
        verdicts.append(verdict_of(text, codes))
    return Run(time.perf_counter() - started, verdicts, outputs)


def run_runner(runner: LlamaGuardRunner, conversations) -> Run:
    requests = [LlamaGuardRequest(conversation=c) for c in conversations]
    started = time.perf_counter()
    outcomes = runner.score(requests)
    seconds = time.perf_counter() - started
    verdicts = [verdict_of(o.output, o.codes) for o in outcomes]
    return Run(seconds, verdicts, [o.output for o in outcomes])


def run_interleaved(model, tokenizer, runner, conversations, chunk: int, rounds: int) -> tuple[Run, Run, list[float]]:
    """Both pipelines on the same chunks of conversations, alternating chunk by chunk (and which
    goes first), for ``rounds`` rounds, so that changes in machine load (the cores are shared) hit
    both alike. The runner's header cache is emptied at the start of every round, so its one-time
    header cost is counted. Returns the totals (verdicts of the first round) and each round's ratio."""
    naive, ours = Run(0.0, [], []), Run(0.0, [], [])
    ratios = []
    for round_ in range(rounds):
        runner.header_cache.clear()
        spent = {"naive": 0.0, "runner": 0.0}
        for k, start in enumerate(range(0, len(conversations), chunk)):
            part = conversations[start : start + chunk]
            jobs = [("naive", naive, lambda: run_naive(model, tokenizer, part)),
                    ("runner", ours, lambda: run_runner(runner, part))]
            for name, total, job in (jobs if (round_ + k) % 2 == 0 else jobs[::-1]):
                run = job()
                spent[name] += run.seconds
                total.seconds += run.seconds
                if round_ == 0:
                    total.verdicts += run.verdicts
                    total.outputs += run.outputs
        ratios.append(spent["naive"] / spent["runner"])
    return naive, ours, ratios


def compare(naive: Run, ours: Run) -> list[str]:
    problems = []
    for i, (a, b, out_a, out_b) in enumerate(zip(naive.verdicts, ours.verdicts, naive.outputs, ours.outputs)):
        if a != b:
            problems.append(f"conversation {i}: naive {a} vs runner {b}")
        elif out_b is not None and out_a != out_b:
            problems.append(f"conversation {i}: outputs differ: {out_a!r} vs {out_b!r}")
    return problems


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench llama_guard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model shape (a minute on 2 cores)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None)
    parser.add_argument("-n", "--conversations", type=int, default=None)
    parser.add_argument("--max-chars", type=int, default=600, help="cut each message text at this length")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--rounds", type=int, default=None, help="repeat the comparison (default 3 quick, 2 full)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (1 is steadier when other jobs share the cores)")
    parser.add_argument("--answers", default="safe,unsafe", help="planted answers to run, in order")
    args = parser.parse_args(argv)
    shape = args.shape or ("small" if args.quick else "1b")
    n = args.conversations or (32 if shape == "small" else 16)
    rounds = args.rounds or (3 if shape == "small" else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = pick_dtype(args.dtype, torch.device("cpu"))

    conversations = load_conversations(n + 1, args.max_chars)
    warmup, conversations = conversations[:1], conversations[1:]
    tokenizer = build_tokenizer(conversations, vocab_size=16000)
    built = time.perf_counter()
    model = build_model(shape, tokenizer, dtype)
    runner = LlamaGuardRunner(model, tokenizer, family=FAMILY, max_batch_size=args.batch_size)
    lengths = [len(encode_prompt(tokenizer, render_prompt(c, FAMILY)).ids) for c in conversations]
    header = encode_prompt(tokenizer, render_prompt(conversations[0], FAMILY)).header_len
    cfg = SHAPES[shape]
    print(f"Llama Guard bench: shape {shape} (hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, "
          f"vocab {cfg['vocab_size']}), {dtype_name(dtype)}, {torch.get_num_threads()} threads, "
          f"model built in {time.perf_counter() - built:.0f} s")
    print(f"{len(conversations)} conversations from ../shared/data: prompt tokens mean {statistics.mean(lengths):.0f}, "
          f"min {min(lengths)}, max {max(lengths)}; cached header {header} tokens; batch size {args.batch_size}; "
          f"{rounds} rounds")
    print(work_bound(lengths, header, len(runner.tokens.unsafe_line) + 2, len(conversations)))
    print(f"load average before the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'answer':<8} {'naive req/s':>12} {'runner req/s':>13} {'ratio':>7}  verdicts")

    totals = {"naive": 0.0, "runner": 0.0}
    failed = False
    planted = None
    for answer in [a.strip() for a in args.answers.split(",") if a.strip()]:
        if planted:
            plant_answer(model, tokenizer, ANSWERS[planted], sign=-1.0)
        plant_answer(model, tokenizer, ANSWERS[answer])
        planted = answer
        check = run_naive(model, tokenizer, warmup)
        run_runner(runner, warmup)
        if check.outputs[0] != ANSWERS[answer].replace(vocab.EOT, "").strip():
            print(f"bench: the planted answer did not take ({check.outputs[0]!r}); not a fair comparison")
            return 1
        naive, ours, ratios = run_interleaved(model, tokenizer, runner, conversations, args.batch_size, rounds)
        problems = compare(naive, ours)
        failed |= bool(problems)
        totals["naive"] += naive.seconds
        totals["runner"] += ours.seconds
        kinds = sorted({v[0] for v in naive.verdicts})
        status = (f"{len(conversations) - len(problems)}/{len(conversations)} identical ({', '.join(kinds)}); "
                  f"per-round ratios {', '.join(f'{r:.2f}' for r in ratios)}")
        _row(answer, len(conversations) * rounds, naive.seconds, ours.seconds, status)
        for problem in problems[:5]:
            print(f"    {problem}")
    if planted and len(args.answers.split(",")) > 1:
        _row("mixed", len(conversations) * rounds * len(args.answers.split(",")), totals["naive"], totals["runner"],
             "")
    print(f"load average after the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 1 if failed else 0


def work_bound(lengths: list[int], header: int, suffix: int, n: int) -> str:
    """Where the ratio's ceiling comes from: the token positions each side runs through the model.
    The naive side runs the whole prompt, the runner the part after the cached header plus the
    lead-in and the category suffix (``suffix`` positions), and the header once per round. Both run
    the same layers over each position, so on a CPU (compute-bound prefill) the ratio of positions
    bounds the speed-up, except for the naive side's decode steps (one full read of the weights
    per generated token after the first; the runner decodes only unsafe answers, one step per
    batch for ``unsafe\\nS1``)."""
    naive = sum(lengths) / n
    runner = sum(length - header + suffix for length in lengths) / n + header / n
    return (f"work per request: naive {naive:.0f} prompt positions + 2 (safe) or 5 (unsafe) decode steps; "
            f"runner {runner:.0f} positions (prompt after the {header}-token header, lead-in and suffix, "
            f"header once per round); prefill-only bound on the ratio {naive / runner:.2f}x")


def _row(label: str, count: int, naive_s: float, runner_s: float, status: str) -> None:
    print(f"{label:<8} {count / naive_s:>12.2f} {count / runner_s:>13.2f} {naive_s / runner_s:>6.2f}x  {status}",
          flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
