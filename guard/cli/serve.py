"""`guard serve`: the OpenAI-compatible gateway (chat completions with input and output checks,
moderations, the native check API) on uvicorn.

Every flag has a ``GUARD_`` environment variable (``--upstream`` = ``GUARD_UPSTREAM`` ...); a flag
given on the command line wins. The upstream API key is read from the variable named by
``GUARD_UPSTREAM_API_KEY_ENV`` (default ``GUARD_UPSTREAM_API_KEY``), never from a flag.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

from guard.errors import BadInput
from guard.settings import GuardSettings


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("serve")(serve)


def settings_with(**overrides: Any) -> GuardSettings:
    """Settings from the environment, with the flags that were given on top."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return GuardSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "--" + str(first["loc"][0]).replace("_", "-") if first.get("loc") else "settings"
        raise BadInput(f"{where}: {first['msg']}") from None


def serve(
    llama_guard: str | None = typer.Option(
        None,
        "--llama-guard",
        help="Llama Guard hub id or directory (GUARD_LLAMA_GUARD; default: the demo model)",
    ),
    family: str | None = typer.Option(
        None, "--family", help="Llama Guard family, e.g. llama-guard-3-8b (GUARD_FAMILY)"
    ),
    prompt_guard: str | None = typer.Option(
        None,
        "--prompt-guard",
        help="Prompt Guard hub id or directory (GUARD_PROMPT_GUARD; default: the demo model)",
    ),
    dtype: str | None = typer.Option(
        None, "--dtype", help="auto, float32, bfloat16 or float16 (GUARD_DTYPE)"
    ),
    upstream: str | None = typer.Option(
        None,
        "--upstream",
        help="OpenAI-compatible base URL of the LLM, e.g. http://127.0.0.1:8001/v1 (GUARD_UPSTREAM)",
    ),
    policies: Path | None = typer.Option(None, "--policies", help="policy directory (GUARD_POLICIES_DIR)"),
    broker: str | None = typer.Option(
        None,
        "--broker",
        help="Celery broker URL: checks run on workers (GUARD_BROKER_URL; default: in-process)",
    ),
    host: str | None = typer.Option(None, "--host", help="bind address (GUARD_HOST, default 127.0.0.1)"),
    port: int | None = typer.Option(None, "--port", help="port (GUARD_PORT, default 8000)"),
    config: Path | None = typer.Option(
        None, "--config", help="gateway config: tenants, API key hashes, upstreams (GUARD_CONFIG_FILE)"
    ),
    audit_url: str | None = typer.Option(None, "--audit-url", help="audit store URL (GUARD_AUDIT_URL)"),
    open_mode: bool | None = typer.Option(
        None,
        "--open/--no-open",
        help="accept loopback requests without a "
        "known key (GUARD_OPEN_MODE; default: on for loopback binds only)",
    ),
    hash_key: str | None = typer.Option(
        None, "--hash-key", help="print the sha256 of an API key for the config file, then exit"
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve the gateway: point any OpenAI client's base URL at http://HOST:PORT/v1."""
    from guard.gateway.config import hash_key as sha256_of

    if hash_key is not None:
        print(sha256_of(hash_key))
        return
    settings = settings_with(
        llama_guard=llama_guard,
        family=family,
        prompt_guard=prompt_guard,
        dtype=dtype,
        upstream=upstream,
        policies_dir=policies,
        broker_url=broker,
        host=host,
        port=port,
        config_file=config,
        audit_url=audit_url,
        open_mode=open_mode,
    )
    if policies is None and "GUARD_POLICIES_DIR" not in os.environ:
        from guard.cli.demo import shipped_policies

        settings = settings.model_copy(update={"policies_dir": shipped_policies(settings.policies_dir)})
    run_gateway(settings, log_level=log_level)


def run_gateway(settings: GuardSettings, *, log_level: str = "info") -> None:
    from guard.gateway.app import create_app
    from guard.gateway.server import serve_forever

    app = create_app(settings)
    print(
        f"guard gateway on http://{settings.host}:{settings.port}/v1 "
        f"(upstream: {settings.upstream or 'none'}, policies: {settings.policies_dir})",
        flush=True,
    )
    serve_forever(
        app, settings.host, settings.port, log_level=log_level, keep_alive_s=settings.keep_alive_s
    )
