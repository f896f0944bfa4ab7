"""`guard audit`: query, verify, export, prune the audit log (and replay a journal by hand)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import typer

from guard.errors import BadInput

audit_app = typer.Typer(help="Query, verify, export and prune the audit log.", no_args_is_help=True)

STORE_HELP = "audit store URL: sqlite:///path or postgresql+psycopg://... (default: GUARD_AUDIT_URL)"


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.add_typer(audit_app, name="audit")


def open_cli_store(url: str | None, *, create: bool = False):
    """The store named by ``--store`` or GUARD_AUDIT_URL, without journal (CLI writes fail closed).

    ``create=False``: a missing SQLite file is an error, not a new empty log.
    """
    from guard.audit.store import SqlAuditStore
    from guard.settings import get_settings

    settings = get_settings()
    key = settings.audit_signing_key.get_secret_value() if settings.audit_signing_key else None
    return SqlAuditStore(url or settings.audit_url, signing_key=key or None, create=create)


def _filters(tenant, action, category, since, until, request_id, limit):
    from guard.audit.store import AuditFilters
    from guard.audit.timespec import parse_time
    from guard.types import Action

    if action is not None and action not in {a.value for a in Action}:
        raise BadInput(
            f"--action must be one of {', '.join(a.value for a in Action)} (got {action!r})", param="action"
        )
    return AuditFilters(
        tenant=tenant,
        action=action,
        category=category,
        request_id=request_id,
        limit=limit,
        since=parse_time(since, param="--since") if since else None,
        until=parse_time(until, param="--until") if until else None,
    )


@audit_app.command("query")
def query(
    tenant: str | None = typer.Option(None, "--tenant"),
    action: str | None = typer.Option(None, "--action", help="allow, flag, redact, escalate or block"),
    category: str | None = typer.Option(None, "--category", help="hazard code, e.g. S9"),
    since: str | None = typer.Option(None, "--since", help="ISO time or a duration ago (e.g. 24h)"),
    until: str | None = typer.Option(None, "--until", help="ISO time or a duration ago"),
    request_id: str | None = typer.Option(None, "--request-id"),
    limit: int = typer.Option(100, "--limit", min=1, help="newest N records"),
    as_json: bool = typer.Option(False, "--json", help="one AuditRecord JSON per line"),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """List audit records, newest first."""
    filters = _filters(tenant, action, category, since, until, request_id, limit)
    audit = open_cli_store(store)
    try:
        records = audit.query(filters)
    finally:
        audit.close()
    if as_json:
        for record in records:
            sys.stdout.write(record.model_dump_json() + "\n")
        return
    print(
        f"{'TIME':26} {'ID':32} {'TENANT':12} {'DIRECTION':13} {'ACTION':9} {'EFFECTIVE':9} "
        f"{'STATUS':11} {'CATEGORIES':12} REQUEST"
    )
    from guard.audit.record import record_categories

    for r in records:
        print(
            f"{r.time.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')[:26]:26} {r.id:32} "
            f"{r.tenant[:12]:12} {r.direction:13} {r.decision.action.value:9} "
            f"{r.decision.effective_action.value:9} {r.guard_status:11} "
            f"{','.join(record_categories(r)) or '-':12} {r.request_id}"
        )
    print(f"{len(records)} record(s)", file=sys.stderr)


@audit_app.command("verify")
def verify(
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the full report (with chain heads) as JSON"),
) -> None:
    """Walk every tenant's hash chain; exit 1 and name the first broken record of each broken chain."""
    audit = open_cli_store(store)
    try:
        report = audit.verify()
    finally:
        audit.close()
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        for warning in report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for broken in report.broken:
            print(f"BROKEN {broken.describe()}")
        if report.ok:
            print(f"ok: {report.records} record(s) in {report.tenants} chain(s) verified")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("export")
def export(
    fmt: str = typer.Option("jsonl", "--format", help="jsonl (one AuditRecord per line)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="file to write (default: stdout)"),
    tenant: str | None = typer.Option(None, "--tenant"),
    action: str | None = typer.Option(None, "--action"),
    category: str | None = typer.Option(None, "--category"),
    since: str | None = typer.Option(None, "--since"),
    until: str | None = typer.Option(None, "--until"),
    request_id: str | None = typer.Option(None, "--request-id"),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Export records oldest first as JSONL: the format `guard policy replay` reads."""
    if fmt != "jsonl":
        raise BadInput(f"--format must be jsonl (got {fmt!r})", param="format")
    filters = _filters(tenant, action, category, since, until, request_id, None)
    audit = open_cli_store(store)
    try:
        if output is None:
            count = audit.export(sys.stdout, filters)
        else:
            with open(output, "w", encoding="utf-8") as handle:
                count = audit.export(handle, filters)
    finally:
        audit.close()
    print(f"{count} record(s) exported", file=sys.stderr)


@audit_app.command("prune")
def prune(
    older_than: str = typer.Option(..., "--older-than", help="e.g. 30d: remove records older than this"),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Remove old records, leaving a checkpoint (HMAC-signed with GUARD_AUDIT_SIGNING_KEY) so that
    `guard audit verify` still passes."""
    from guard.audit.timespec import parse_duration

    cutoff = datetime.now(timezone.utc) - parse_duration(older_than, param="--older-than")
    audit = open_cli_store(store)
    try:
        report = audit.prune(cutoff)
    finally:
        audit.close()
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    total = sum(report.pruned.values())
    for tenant, count in sorted(report.pruned.items()):
        print(f"{tenant}: {count} record(s) pruned")
    print(f"{total} record(s) older than {cutoff.isoformat(timespec='seconds')} pruned")


@audit_app.command("replay-journal")
def replay_journal(
    journal: Path | None = typer.Option(
        None, "--journal", help="journal file (default: GUARD_AUDIT_JOURNAL)"
    ),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Move records a gateway journaled while the store was down into the store."""
    from guard.audit.journal import Journal
    from guard.audit.store import SqlAuditStore
    from guard.settings import get_settings

    settings = get_settings()
    path = journal or settings.audit_journal
    if not path.exists():
        raise BadInput(f"no journal at {path}", param="journal")
    audit = SqlAuditStore(store or settings.audit_url, journal=Journal(path), create=True)
    try:
        count = audit.replay_journal()
    finally:
        audit.close()
    print(json.dumps({"replayed": count, "journal": str(path)}))
