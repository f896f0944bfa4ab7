"""`guard check`: run Llama Guard and/or Prompt Guard on one conversation and print the results.

Input: a JSON array of OpenAI-style messages on stdin, or TEXT as a single user message.
Models: ``--llama-guard`` / ``--prompt-guard`` (defaults ``GUARD_LLAMA_GUARD`` / ``GUARD_PROMPT_GUARD``).
When only one of them is set, only that runner runs; when neither is, both demo models run
(Llama Guard demo and the Prompt Guard 2 demo; they are built on first use).

Llama Guard judges the conversation as a whole (its last message); one longer than the model reads
is judged in pieces that each fit (``--overflow split``, the default: the JSON's ``pieces`` and
``split`` say how) or refused (``--overflow refuse``: exit 2). Prompt Guard scans the text of the
**last user message** only; which messages a policy scans (user, tool output, documents) is
decided by the policy layer, not here.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, get_args

import typer

from guard.cli.io import read_stdin_text
from guard.errors import BadInput
from guard.messages import parse_messages, parse_messages_json
from guard.settings import DType, get_settings
from guard.types import LlamaGuardResult, Message, Overflow, PromptGuardResult

_SEGMENT_PREVIEW = 120


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("check")(check)


@dataclass(frozen=True)
class Plan:
    """Which models to run (None = that runner is not run)."""

    llama_guard: str | None
    prompt_guard: str | None


def check(
    text: str | None = typer.Argument(
        None, help="text to check as one user message (default: messages JSON on stdin)"),
    llama_guard: str | None = typer.Option(
        None, "--llama-guard", help="Llama Guard hub id or directory (default: GUARD_LLAMA_GUARD)"),
    family: str | None = typer.Option(
        None, "--family",
        help="Llama Guard family, e.g. llama-guard-3-1b (default: GUARD_FAMILY, else guessed)"),
    prompt_guard: str | None = typer.Option(
        None, "--prompt-guard", help="Prompt Guard hub id or directory (default: GUARD_PROMPT_GUARD)"),
    dtype: str | None = typer.Option(
        None, "--dtype", help="auto, float32, bfloat16 or float16 (default: GUARD_DTYPE)"),
    decode: bool = typer.Option(
        False, "--decode", help="always run the greedy decode, so `output` is the raw text"),
    overflow: str = typer.Option(
        "split", "--overflow",
        help="a conversation longer than the Llama Guard model reads: split (judge it in pieces) or refuse"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    broker: str | None = typer.Option(
        None, "--broker",
        help="send the check through the guard workers behind this Redis URL (default: GUARD_BROKER_URL)"),
) -> None:
    """Check a conversation with Llama Guard and/or Prompt Guard; with no model given, the demo models."""
    settings = get_settings()
    family = family or settings.family
    dtype = dtype or settings.dtype
    _validate_options(family, dtype, overflow)
    conversation = _conversation(text)
    _quiet_transformers()
    if broker or settings.broker_url:
        remote = _check_through_broker(broker or settings.broker_url, conversation, decode, llama_guard,
                                       prompt_guard, overflow)
        _print(remote, as_json)
        return
    llama_guard = llama_guard or settings.llama_guard or None
    prompt_guard = prompt_guard or settings.prompt_guard or None
    demo = not (llama_guard or prompt_guard)
    scanned = _last_user_text(conversation) if (prompt_guard or demo) else None
    plan = _demo_plan() if demo else Plan(llama_guard, prompt_guard)
    report: dict[str, Any] = {}
    if plan.llama_guard:
        report["llama_guard"] = _run_llama_guard(plan.llama_guard, family, dtype, conversation, decode,
                                                 overflow)
    if plan.prompt_guard and scanned is not None:
        report["prompt_guard"] = _run_prompt_guard(plan.prompt_guard, dtype, scanned)
    _print(report, as_json)


# ---------------------------------------------------------------------- inputs


def _validate_options(family: str | None, dtype: str, overflow: str) -> None:
    """Fail on a bad family, dtype or overflow before any model is loaded."""
    if dtype not in get_args(DType):
        raise BadInput(f"unknown dtype {dtype!r} (use {', '.join(get_args(DType))})", param="dtype")
    if overflow not in get_args(Overflow):
        raise BadInput(f"unknown overflow {overflow!r} (use {', '.join(get_args(Overflow))})",
                       param="overflow")
    if family:
        from guard.models.llama_guard.family import get_family

        get_family(family)


def _quiet_transformers() -> None:
    """No weight-loading progress bars or warnings on stderr: errors there are one line."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _conversation(text: str | None) -> list[Message]:
    if text is not None:
        if not text.strip():
            raise BadInput("the text to check is empty")
        return parse_messages([{"role": "user", "content": text}])
    if sys.stdin is None or sys.stdin.isatty():
        raise BadInput("give TEXT or pipe a JSON array of messages on stdin")
    return parse_messages_json(read_stdin_text())


def _last_user_text(conversation: list[Message]) -> str:
    for message in reversed(conversation):
        if message.role == "user":
            return message.text
    raise BadInput("Prompt Guard scans the last user message, and the conversation has none")


def _demo_plan() -> Plan:
    """No model asked for: both demo models (built on first use), Prompt Guard 2 for Prompt Guard."""
    from guard.models.testing import ensure_demo_models

    demo = ensure_demo_models()
    return Plan(str(demo.llama_guard), str(demo.prompt_guard_2))


# ---------------------------------------------------------------------- runners


def _run_llama_guard(model: str, family: str | None, dtype: str, conversation: list[Message],
                     decode: bool, overflow: Overflow) -> dict[str, Any]:
    from guard.models.llama_guard.runner import load_llama_guard
    from guard.types import LlamaGuardRequest

    settings = get_settings()
    runner = load_llama_guard(model, family=family, revision=settings.llama_guard_revision, dtype=dtype,
                              device=settings.device)
    request = LlamaGuardRequest(conversation=conversation, decode=decode, overflow=overflow)
    [result] = runner.classify([request])
    return _llama_guard_json(result)


def _run_prompt_guard(model: str, dtype: str, text: str) -> dict[str, Any]:
    from guard.models.prompt_guard import load_prompt_guard
    from guard.types import PromptGuardRequest

    settings = get_settings()
    runner = load_prompt_guard(model, revision=settings.prompt_guard_revision, dtype=dtype,
                               device=settings.device)
    [result] = runner.scan([PromptGuardRequest(text=text, source="user")])
    return _prompt_guard_json(result)


def _llama_guard_json(result: LlamaGuardResult) -> dict[str, Any]:
    return {
        "unsafe_score": result.unsafe_score,
        "categories": list(result.categories),
        "category_scores": dict(result.category_scores),
        "output": result.output,
        "model": result.model.model,
        "family": result.model.family,
        "pieces": result.pieces,
        "split": result.split,
    }


def _prompt_guard_json(result: PromptGuardResult) -> dict[str, Any]:
    return {
        "jailbreak_score": result.jailbreak_score,
        "injection_score": result.injection_score,
        "segment": result.segment,
        "model": result.model.model,
    }


def _check_through_broker(broker: str, conversation: list[Message], decode: bool, llama_guard: str | None,
                          prompt_guard: str | None, overflow: Overflow) -> dict[str, Any]:
    """Both guards on the workers' models (``--llama-guard``/``--prompt-guard`` pick local models)."""
    from guard.cli.remote import check_through_broker

    if llama_guard or prompt_guard:
        raise BadInput("with --broker the workers' models answer: drop --llama-guard/--prompt-guard")
    scanned = next((m.text for m in reversed(conversation) if m.role == "user"), None)
    lg, pg = check_through_broker(broker, conversation, decode=decode, scanned=scanned, overflow=overflow)
    report = {"llama_guard": _llama_guard_json(lg)}
    if pg is not None:
        report["prompt_guard"] = _prompt_guard_json(pg)
    return report


# ---------------------------------------------------------------------- output


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    lines: list[str] = []
    if "llama_guard" in report:
        lines += _llama_guard_table(report["llama_guard"])
    if "prompt_guard" in report:
        lines += _prompt_guard_table(report["prompt_guard"])
    print("\n".join(lines))


def _llama_guard_table(lg: dict[str, Any]) -> list[str]:
    verdict = "unsafe" if lg["categories"] or lg["unsafe_score"] >= 0.5 else "safe"
    top = sorted(lg["category_scores"].items(), key=lambda kv: kv[1], reverse=True)[:3]
    rows = [
        f"Llama Guard   {lg['family']}  {lg['model']}",
        f"  verdict       {verdict}",
        f"  unsafe_score  {lg['unsafe_score']:.4f}",
        f"  categories    {', '.join(lg['categories']) or '-'}",
        f"  top scores    {', '.join(f'{c} {s:.4f}' for c, s in top) or '-'}",
    ]
    if lg["output"] is not None:
        rows.append(f"  output        {json.dumps(lg['output'], ensure_ascii=False)}")
    if lg["pieces"] > 1:
        rows.append(f"  pieces        {lg['pieces']}: {lg['split']}")
    return rows


def _prompt_guard_table(pg: dict[str, Any]) -> list[str]:
    segment = pg["segment"] or ""
    if len(segment) > _SEGMENT_PREVIEW:
        segment = segment[:_SEGMENT_PREVIEW - 3] + "..."
    return [
        f"Prompt Guard  {pg['model']}",
        f"  jailbreak     {pg['jailbreak_score']:.4f}",
        f"  injection     {pg['injection_score']:.4f}",
        f"  segment       {json.dumps(segment, ensure_ascii=False)}",
    ]
