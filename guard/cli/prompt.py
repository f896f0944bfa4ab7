"""`guard prompt`: print the exact Llama Guard prompt (or its token ids) for messages on stdin."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from guard.cli.io import read_stdin_text
from guard.errors import BadInput, ModelUnavailable
from guard.messages import parse_messages_json
from guard.settings import get_settings


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("prompt")(prompt)


def prompt(
    family: str | None = typer.Option(
        None, "--family", help="llama-guard-3-8b, llama-guard-3-1b, llama-guard-4, llama-guard-2 or "
                               "llama-guard-1 (default: GUARD_FAMILY)"),
    categories: Path | None = typer.Option(
        None, "--categories",
        help="JSON object code -> text printed after 'code: ' (replaces the default list)"),
    exclude: str = typer.Option(
        "", "--exclude", help="comma-separated codes to drop, e.g. S6,S13 (no renumbering)"),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="tokenizer directory (for --token-ids)"),
    token_ids: bool = typer.Option(False, "--token-ids", help="print the JSON list of input ids instead"),
) -> None:
    """Read a JSON array of OpenAI-style messages on stdin and print the exact prompt the model sees
    (no trailing newline), or with --token-ids the input ids."""
    from guard.models.llama_guard.prompt import render_prompt

    family = family or get_settings().family
    if not family:
        raise BadInput("no Llama Guard family: pass --family or set GUARD_FAMILY", param="family")
    if token_ids and tokenizer is None:
        raise BadInput("--token-ids needs --tokenizer DIR", param="tokenizer")
    conversation = parse_messages_json(read_stdin_text())
    rendered = render_prompt(conversation, family, _read_categories(categories), _split_codes(exclude))
    if not token_ids:
        _write(rendered.text)
        return
    from guard.models.llama_guard.tokenize import encode_prompt

    _write(json.dumps(encode_prompt(_load_tokenizer(tokenizer), rendered).ids) + "\n")


def _write(text: str) -> None:
    """Write exactly ``text`` as UTF-8, whatever the locale says."""
    out = getattr(sys.stdout, "buffer", None)
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    sys.stdout.flush()
    out.write(text.encode("utf-8"))
    out.flush()


def _split_codes(exclude: str) -> tuple[str, ...]:
    return tuple(code.strip() for code in exclude.split(",") if code.strip())


def _read_categories(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"cannot read categories file {str(path)!r}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"categories file {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, str) for v in raw.values()):
        raise BadInput(f"categories file {str(path)!r} must be a non-empty JSON object of code -> text")
    return raw


def _load_tokenizer(path: Path) -> Any:
    if not path.is_dir():
        raise BadInput(f"tokenizer directory {str(path)!r} does not exist", param="tokenizer")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelUnavailable(f"cannot load a tokenizer from {str(path)!r}: {reason}") from None
