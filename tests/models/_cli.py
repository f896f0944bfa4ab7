"""Run the `guard` command line in-process, exactly as the console script does (``guard.cli.main``:
argument parsing, the command, the error mapper), with stdin/stdout/stderr captured as bytes."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_guard(args: list[str], stdin: str = "") -> CliResult:
    from guard.cli import main

    out, err = io.BytesIO(), io.BytesIO()
    saved = sys.argv, sys.stdin, sys.stdout, sys.stderr
    sys.argv = ["guard", *args]
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8")
    wrappers = [io.TextIOWrapper(out, encoding="utf-8", write_through=True),
                io.TextIOWrapper(err, encoding="utf-8", write_through=True)]
    sys.stdout, sys.stderr = wrappers
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        for wrapper in wrappers:
            wrapper.flush()
            wrapper.detach()  # so that collecting the wrapper does not close the buffer
        sys.argv, sys.stdin, sys.stdout, sys.stderr = saved
    return CliResult(code, out.getvalue().decode("utf-8"), err.getvalue().decode("utf-8"))


def run_guard_subprocess(args: list[str], stdin: str = "") -> CliResult:
    proc = subprocess.run([sys.executable, "-m", "guard", *args], input=stdin.encode("utf-8"),
                          capture_output=True, cwd=REPO, timeout=120)
    return CliResult(proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8"))
