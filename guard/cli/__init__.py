"""The `guard` command line. Each command lives in its own module and registers itself here.

Commands parse arguments and call the library; they hold no business logic. Errors go through
``guard.cli.errors.run_cli``: bad input exits 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import typer

from guard.cli import (
    audit,
    check,
    demo,
    models,
    policy,
    prompt,
    review,
    serve,
    stats,
    status,
    upstream,
    worker,
)
from guard.cli.errors import run_cli

app = typer.Typer(
    name="guard",
    help="Safety and moderation service for LLM applications (Llama Guard, Prompt Guard).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """Safety and moderation service for LLM applications (Llama Guard, Prompt Guard)."""


for _module in (prompt, check, models, demo, policy, worker, status, serve, upstream, audit, review, stats):
    _module.register(app)


def main() -> None:
    run_cli(app)


@app.command("version")
def version() -> None:
    """Print the guard version."""
    from guard import __version__

    print(__version__)
