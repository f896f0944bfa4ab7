"""`guard review`: the queue of escalated decisions and the reviewer's verdicts."""

from __future__ import annotations

import sys

import typer

from guard.cli.audit import STORE_HELP, open_cli_store
from guard.errors import BadInput

review_app = typer.Typer(help="Review escalated decisions.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.add_typer(review_app, name="review")


@review_app.command("list")
def list_items(
    tenant: str | None = typer.Option(None, "--tenant"),
    limit: int = typer.Option(100, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json", help="one AuditRecord JSON per line"),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Open review items (escalated records without a verdict), oldest first."""
    from guard.audit.record import record_categories
    from guard.audit.review import open_items

    audit = open_cli_store(store)
    try:
        items = open_items(audit, tenant=tenant, limit=limit)
    finally:
        audit.close()
    if as_json:
        for record in items:
            sys.stdout.write(record.model_dump_json() + "\n")
        return
    print(f"{'ID':32} {'TIME':20} {'TENANT':12} {'DIRECTION':13} {'CATEGORIES':12} REASONS")
    for r in items:
        reasons = "; ".join(
            f"{x.kind}:{x.code or ''}{'' if x.score is None else f' {x.score:.2f}'}"
            for x in r.decision.reasons
        )
        print(
            f"{r.id:32} {r.time.strftime('%Y-%m-%dT%H:%M:%S'):20} {r.tenant[:12]:12} {r.direction:13} "
            f"{','.join(record_categories(r)) or '-':12} {reasons or '-'}"
        )
    print(f"{len(items)} open item(s)", file=sys.stderr)


@review_app.command("decide")
def decide(
    record_id: str = typer.Argument(..., metavar="ID", help="id of the escalated record"),
    verdict: str = typer.Option(..., "--verdict", help="confirm or overturn"),
    note: str = typer.Option("", "--note", help="why (stored in the review record)"),
    reviewer: str | None = typer.Option(None, "--reviewer", help="who decided (default: $USER)"),
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
) -> None:
    """Record a verdict on an escalated record: a new audit record linked to it."""
    import os

    from guard.audit.review import VERDICTS
    from guard.audit.review import decide as decide_item

    if verdict not in VERDICTS:
        raise BadInput(f"--verdict must be confirm or overturn (got {verdict!r})", param="verdict")
    audit = open_cli_store(store)
    try:
        record = decide_item(audit, record_id, verdict, note, reviewer or os.environ.get("USER"))  # type: ignore[arg-type]
    finally:
        audit.close()
    print(f"review record {record.id} ({verdict}) linked to {record_id}")
