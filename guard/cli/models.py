"""`guard models build-demo`: build (or find) the tiny demo models and print where they are."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    models_app = typer.Typer(help="Demo models built offline for tests and demos.", no_args_is_help=True)
    models_app.command("build-demo")(build_demo)
    app.add_typer(models_app, name="models")


def build_demo(
    out: Annotated[
        Path | None, typer.Option("--out", help="Cache root (default: GUARD_DEMO_MODELS_DIR).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the models exist.")] = False,
) -> None:
    """Build the tiny Llama Guard, Prompt Guard 1/2 and chat demo models (once per builder version).

    Prints one `name<TAB>path` line per model; build times go to stderr.
    """
    from dataclasses import asdict

    from guard.models.testing import ensure_demo_models

    logging.basicConfig(format="%(message)s")
    logging.getLogger("guard.models.testing").setLevel(logging.INFO)
    started = time.perf_counter()
    models = ensure_demo_models(out, force=force)
    for name, path in asdict(models).items():
        print(f"{name}\t{path}")
    typer.echo(f"ready in {time.perf_counter() - started:.1f} s", err=True)
