"""`guard worker`: serve one model kind from its Celery queue (a thin wrapper over `celery worker`).

Every flag becomes the ``GUARD_`` variable the worker process reads (``--model`` becomes
``GUARD_LLAMA_GUARD`` or ``GUARD_PROMPT_GUARD`` after the queue), then the Celery worker starts
with the threads pool, so that concurrent tasks share the process's micro-batcher. The process first
re-executes itself with jemalloc preloaded where it is installed (``GUARD_WORKER_ALLOCATOR``,
``workers.allocator``). The same worker starts with ``celery -A workers.app worker -Q llama_guard``
and the variables set by hand (and ``LD_PRELOAD=libjemalloc.so.2`` for the allocator).
"""

from __future__ import annotations

import os

import typer

from guard.errors import BadInput

QUEUE_HELP = "queue to serve: llama_guard or prompt_guard (both: llama_guard,prompt_guard)"


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("worker")(worker)


def worker(
    queue: str = typer.Option(..., "--queue", "-Q", help=QUEUE_HELP),
    model: str | None = typer.Option(
        None, "--model", help="hub id or directory (default: GUARD_LLAMA_GUARD / GUARD_PROMPT_GUARD; "
                              "none = the demo model)"),
    family: str | None = typer.Option(None, "--family", help="Llama Guard family, e.g. llama-guard-3-8b"),
    revision: str | None = typer.Option(None, "--revision",
                                        help="model revision (hub commit, branch or tag)"),
    dtype: str | None = typer.Option(None, "--dtype", help="auto, float32, bfloat16 or float16"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1, mps"),
    concurrency: int | None = typer.Option(
        None, "--concurrency", "-c", min=1,
        help="tasks run at once (threads; default GUARD_WORKER_CONCURRENCY)"),
    broker: str | None = typer.Option(None, "--broker", help="broker URL (default: GUARD_BROKER_URL)"),
    result_backend: str | None = typer.Option(
        None, "--result-backend", help="result backend URL (default: GUARD_RESULT_BACKEND, else the broker)"),
    name: str | None = typer.Option(None, "--name", "-n",
                                    help="worker node name (default: <queue>.<pid>@<host>)"),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l", help="DEBUG, INFO, WARNING or ERROR"),
) -> None:
    """Run a Celery worker serving Llama Guard or Prompt Guard from its queue."""
    queues = parse_queues(queue)
    if model is not None and len(queues) > 1:
        raise BadInput("--model names one model: serve one queue per worker "
                       "(--queue llama_guard or prompt_guard)")
    _export(queues, model=model, family=family, revision=revision, dtype=dtype, device=device,
            concurrency=concurrency, broker=broker, result_backend=result_backend)
    _validate_settings()
    from workers.allocator import reexec_with

    from guard.settings import get_settings

    settings = get_settings()
    reexec_with(settings.worker_allocator)  # jemalloc, where installed (no return when it re-executes)
    from workers.app import app, celery_config  # after the re-exec: imported once, in the final process

    app.conf.update(celery_config(settings))
    node = name or f"{'+'.join(queues)}.{os.getpid()}@%h"
    app.worker_main(["worker", "-Q", ",".join(queues), "-P", "threads",
                     "-c", str(settings.worker_concurrency), "-n", node, "--loglevel", loglevel,
                     "--without-mingle", "--without-gossip"])


def parse_queues(value: str) -> list[str]:
    from guard.executor.wire import KINDS

    queues = [q.strip() for q in value.split(",") if q.strip()]
    unknown = [q for q in queues if q not in KINDS]
    if not queues or unknown:
        raise BadInput(f"unknown queue {', '.join(unknown) or repr(value)}: use llama_guard or prompt_guard",
                       param="queue")
    return list(dict.fromkeys(queues))


def _export(queues: list[str], *, model: str | None, **flags: object) -> None:
    """Flags -> GUARD_ variables, so the worker (and anything it starts) reads them."""
    names = {"family": "GUARD_FAMILY", "dtype": "GUARD_DTYPE", "device": "GUARD_DEVICE",
             "concurrency": "GUARD_WORKER_CONCURRENCY", "broker": "GUARD_BROKER_URL",
             "result_backend": "GUARD_RESULT_BACKEND"}
    if model is not None:
        os.environ["GUARD_LLAMA_GUARD" if queues == ["llama_guard"] else "GUARD_PROMPT_GUARD"] = model
    revision = flags.pop("revision")
    if revision is not None:
        lg = queues == ["llama_guard"]
        os.environ["GUARD_LLAMA_GUARD_REVISION" if lg else "GUARD_PROMPT_GUARD_REVISION"] = str(revision)
    for key, value in flags.items():
        if value is not None:
            os.environ[names[key]] = str(value)


def _validate_settings() -> None:
    """Re-read the settings from the environment; a bad value is bad input, before Celery starts."""
    from pydantic import ValidationError

    from guard.settings import get_settings

    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValidationError as error:
        first = error.errors()[0]
        raise BadInput(f"GUARD_{str(first['loc'][0]).upper()}: {first['msg']}") from None
    if settings.family:
        from guard.models.llama_guard.family import get_family

        get_family(settings.family)
