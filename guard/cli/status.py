"""`guard status`: what every Celery worker serves (model, revision, device, dtype, loaded, batches).

Every worker answers the ``guard_status`` broadcast within ``--timeout``. With ``--require-loaded``
the exit code says whether every matching worker has its model loaded (and at least one answered):
what a container health check wants (``--host $HOSTNAME`` picks this container's worker).
"""

from __future__ import annotations

import asyncio
import json

import typer

from guard.cli.errors import EXIT_FAILURE
from guard.errors import BadInput
from guard.executor.wire import WorkerStatus


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("status")(status)


def status(
    broker: str | None = typer.Option(None, "--broker", help="broker URL (default: GUARD_BROKER_URL)"),
    timeout: float = typer.Option(1.0, "--timeout", min=0.05,
                                  help="seconds to wait for the workers' answers"),
    queue: str | None = typer.Option(None, "--queue", help="only workers of this queue"),
    host: str | None = typer.Option(None, "--host", help="only workers whose node name ends with @HOST"),
    require_loaded: bool = typer.Option(
        False, "--require-loaded", help="exit 1 unless a worker answered and all have their model loaded"),
    as_json: bool = typer.Option(False, "--json", help="one JSON array instead of a table"),
) -> None:
    """Print the status of every guard worker behind the broker."""
    from guard.settings import get_settings

    settings = get_settings()
    broker = broker or settings.broker_url
    if not broker:
        raise BadInput("no broker: give --broker URL or set GUARD_BROKER_URL", param="broker")
    found = [s for s in asyncio.run(_collect(settings.model_copy(update={"broker_url": broker}), timeout))
             if (queue is None or s.queue == queue) and (host is None or s.worker.endswith(f"@{host}"))]
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in found]))
    else:
        print(render(found))
    if not found or (require_loaded and not all(s.loaded for s in found)):
        raise typer.Exit(EXIT_FAILURE)


async def _collect(settings: object, timeout: float) -> list[WorkerStatus]:
    from guard.executor.celery import CeleryExecutor

    executor = CeleryExecutor(settings)  # type: ignore[arg-type]
    try:
        return await executor.status(timeout)
    finally:
        await executor.aclose()


def render(statuses: list[WorkerStatus]) -> str:
    if not statuses:
        return "no worker answered"
    rows = [("WORKER", "QUEUE", "STATE", "MODEL", "REVISION", "DEVICE", "DTYPE", "BATCHES", "ITEMS", "MAX")]
    for s in statuses:
        state = "loaded" if s.loaded else ("loading" if s.loading else ("error" if s.error else "idle"))
        model = s.model.model if s.model else (s.configured_model or "(demo)")
        rows.append((s.worker, s.queue, state, model, (s.model.revision if s.model else None) or "-",
                     s.model.device if s.model else "-", s.model.dtype if s.model else "-",
                     str(s.batching.batches), str(s.batching.items), str(s.batching.max_batch)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines += [f"{s.worker}: {s.error}" for s in statuses if s.error]
    return "\n".join(lines)
