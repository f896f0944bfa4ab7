"""compose.yaml: every service runs a command the guard CLI has, with options it accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from guard.cli import app

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def cli_command(argv: list[str]) -> Any:
    """The (typer-vendored) click command ``guard argv...`` resolves to; fails if it does not exist."""
    group = typer.main.get_command(app)
    command = group.commands.get(argv[1])  # type: ignore[attr-defined]
    assert command is not None, f"`guard {argv[1]}` is not a guard command"
    return command


def option_names(command: Any) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


def test_the_expected_services_are_there() -> None:
    assert {"redis", "gateway", "worker-llama-guard", "worker-prompt-guard"} <= set(services())


@pytest.mark.parametrize("name", [n for n, s in services().items() if "command" in s and n != "redis"])
def test_service_command_exists_in_the_cli(name: str) -> None:
    argv = services()[name]["command"]
    assert argv[0] == "guard"
    command = cli_command(argv)
    flags = [arg for arg in argv[2:] if arg.startswith("-")]
    unknown = [flag for flag in flags if flag.split("=")[0] not in option_names(command)]
    assert not unknown, f"{name}: `guard {argv[1]}` has no option {unknown}"


@pytest.mark.parametrize("name", ["worker-llama-guard", "worker-prompt-guard"])
def test_worker_health_check_runs_guard_status_with_known_options(name: str) -> None:
    test = services()[name]["healthcheck"]["test"]
    line = test[1] if test[0] == "CMD-SHELL" else " ".join(test[1:])
    words = line.split()
    assert words[:2] == ["guard", "status"]
    known = option_names(cli_command(words))
    assert {w for w in words if w.startswith("--")} <= known


def test_workers_serve_their_own_queue_and_share_the_model_cache() -> None:
    for name, queue in (("worker-llama-guard", "llama_guard"), ("worker-prompt-guard", "prompt_guard")):
        service = services()[name]
        argv = service["command"]
        assert argv[argv.index("--queue") + 1] == queue
        assert any(str(v).endswith(":/models") for v in service["volumes"])


def test_no_secret_values_in_the_file() -> None:
    """Secrets are passed through by name (``${VAR:-}``), never written down."""
    text = COMPOSE.read_text()
    for key in ("API_KEY", "TOKEN", "PASSWORD", "SECRET"):
        for match in re.finditer(rf"^\s*\w*{key}\w*:\s*(.+)$", text, flags=re.MULTILINE):
            assert re.fullmatch(r"\$\{\w+:-\}", match.group(1).strip()), match.group(0)
