"""The one place that maps guard errors to CLI exit codes and messages."""

from __future__ import annotations

import sys

import typer
from typer import exceptions as typer_exceptions

from guard.errors import BadInput, ConfigError, GuardError

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


def exit_code_for(error: GuardError) -> int:
    return EXIT_BAD_INPUT if isinstance(error, (BadInput, ConfigError)) else EXIT_FAILURE


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    """Print one line on stderr and exit (for checks done in the CLI layer itself)."""
    print(f"guard: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_cli(app: typer.Typer) -> None:
    try:
        # Without standalone mode click returns (not raises) the code of a `typer.Exit(code)`.
        code = app(standalone_mode=False)
    except GuardError as error:
        fail(f"{error.kind}: {error.message}", exit_code_for(error))
    except typer.Abort:
        fail("aborted", EXIT_FAILURE)
    except typer_exceptions.TyperException as error:
        # Usage errors (unknown option, bad value): typer prints them; exit 2 like click does.
        error.show()
        raise SystemExit(EXIT_BAD_INPUT) from None
    except typer.Exit as error:
        raise SystemExit(error.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)
