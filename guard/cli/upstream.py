"""`guard upstream --model DIR`: serve a local transformers causal LM behind OpenAI's
chat-completions API (streaming included), as the LLM behind the gateway on one machine."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("upstream")(upstream)


def upstream(
    model: Path | None = typer.Option(
        None,
        "--model",
        help="directory of a saved causal LM and its tokenizer "
        "(default: the demo chat model, built on first use)",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="bind address"),
    port: int = typer.Option(8001, "--port", help="port"),
    name: str | None = typer.Option(None, "--name", help="model id to report (default: the directory name)"),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16"),
    max_tokens: int = typer.Option(128, "--max-tokens", help="default completion length"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve a local chat model at http://HOST:PORT/v1 (not a production LLM server)."""
    from guard.gateway.server import serve_forever
    from guard.upstream.app import create_upstream_app
    from guard.upstream.engine import ChatEngine

    engine = ChatEngine.load(model or demo_chat_model(), dtype=dtype, name=name)
    print(f"guard upstream: {engine.name} on http://{host}:{port}/v1", flush=True)
    serve_forever(create_upstream_app(engine, default_max_tokens=max_tokens), host, port, log_level=log_level)


def demo_chat_model() -> Path:
    from guard.models.testing import ensure_demo_models
    from guard.settings import get_settings

    return ensure_demo_models(get_settings().demo_models_dir).chat
