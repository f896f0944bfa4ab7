"""`guard stats`: the key figures of a running gateway (or worker), read from its /metrics."""

from __future__ import annotations

import json
import os

import typer

from guard.errors import BadInput, ModelUnavailable


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.command("stats")(stats)


def stats(
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="gateway base URL (or a /metrics URL)"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
    timeout: float = typer.Option(5.0, "--timeout", help="seconds to wait for the server"),
) -> None:
    """Print requests, decisions by action, guard latency p50/p99, fail-open and audit figures.

    The gateway's /metrics needs an admin API key, read from GUARD_API_KEY (never a flag: it would
    show in the process list), unless the gateway is local in open mode; its metrics port
    (GUARD_METRICS_PORT) needs none."""
    import httpx

    from guard.metrics import summarize

    target = url if url.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"
    key = os.environ.get("GUARD_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(target, timeout=timeout, headers=headers)
    except httpx.HTTPError as exc:
        raise ModelUnavailable(f"cannot read {target}: {exc}") from None
    if response.status_code in (401, 403):
        raise BadInput(f"{target} answered {response.status_code}: set GUARD_API_KEY to an admin key")
    if response.status_code != 200:
        raise ModelUnavailable(f"cannot read {target}: HTTP {response.status_code}")
    figures = summarize(response.text)
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    print(_render(target, figures))


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _render(target: str, f: dict) -> str:
    lines = [f"guard stats from {target}"]
    by_status = ", ".join(f"{k}: {_n(v)}" for k, v in f["requests"]["by_status"].items()) or "-"
    lines.append(f"requests          {_n(f['requests']['total'])}  ({by_status})")
    by_action = ", ".join(f"{k}: {_n(v)}" for k, v in f["decisions"]["by_action"].items()) or "-"
    lines.append(f"decisions         {_n(f['decisions']['total'])}  ({by_action})")
    for guard, q in f["guard_latency"].items() or {"-": {"count": 0, "p50_ms": None, "p99_ms": None}}.items():
        lines.append(
            f"guard latency     {guard}: p50 {_ms(q['p50_ms'])}, p99 {_ms(q['p99_ms'])} "
            f"over {_n(q['count'])} check(s)"
        )
    for _, q in f["upstream_latency"].items():
        lines.append(f"upstream latency  p50 {_ms(q['p50_ms'])}, p99 {_ms(q['p99_ms'])}")
    lines.append(f"guard errors      {_n(f['guard_errors'])}, timeouts {_n(f['guard_timeouts'])}")
    lines.append(f"fail-open events  {_n(f['fail_open'])}")
    audit = f["audit"]
    sinks = ", ".join(f"{k}: {_n(v)}" for k, v in audit["records_by_sink"].items()) or "-"
    lines.append(
        f"audit             records ({sinks}), write failures {_n(audit['write_failures'])}, "
        f"journal depth {_n(audit['journal_depth'])}"
    )
    lines.append(f"policy reloads    failures {_n(f['policy_reload_failures'])}")
    return "\n".join(lines)
