"""`guard policy validate | show | test | replay`: check, inspect, test and replay policies."""

from __future__ import annotations

import asyncio
import json
import sys
from functools import partial
from pathlib import Path

import typer
import yaml

from guard.cli.errors import EXIT_BAD_INPUT, EXIT_FAILURE

policy_app = typer.Typer(help="Validate, show, test and replay policies.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.add_typer(policy_app, name="policy")


def _default_dir() -> Path:
    from guard.settings import get_settings

    return get_settings().policies_dir


# --------------------------------------------------------------------------- validate


@policy_app.command("validate")
def validate(
    paths: list[Path] = typer.Argument(..., help="policy files or directories"),
) -> None:
    """Validate policy files: exit 0, or exit 2 with `file:line: message` lines on stderr."""
    from guard.policy.loader import PolicyLoadError, load_policy_dir, load_policy_files

    dirs = [p for p in paths if p.is_dir()]
    files = [p for p in paths if not p.is_dir()]
    jobs = [partial(load_policy_dir, d) for d in dirs] + ([partial(load_policy_files, files)] if files else [])
    loaded, issues = [], []
    for job in jobs:
        try:
            loaded.append(job())
        except PolicyLoadError as error:
            issues.extend(error.issues)
    if issues:
        for issue in dict.fromkeys(issues):
            print(issue, file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT)
    for policy_set in loaded:
        for pid, policy in sorted(policy_set.policies.items()):
            chain = " <- ".join(policy_set.chains.get(pid, (pid,)))
            print(f"ok  {policy_set.sources[pid]}  {chain}  v{policy.version}  {policy.content_hash[:12]}")


# --------------------------------------------------------------------------- show


@policy_app.command("show")
def show(
    policy_id: str = typer.Argument(..., help="policy id (or a policy file)"),
    directory: Path | None = typer.Option(None, "--dir", help="policy directory [default: GUARD_POLICIES_DIR]"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of YAML"),
) -> None:
    """Print the fully resolved policy (after `extends`) with its content hash."""
    policy, chain, source = _resolve(policy_id, directory)
    data = policy.model_dump(mode="json")
    if as_json:
        print(json.dumps({"policy": data, "hash": policy.content_hash, "chain": list(chain)}, indent=2))
        return
    print(f"# {policy.id} v{policy.version} from {source}")
    print(f"# chain: {' <- '.join(chain)}")
    print(f"# hash: {policy.content_hash}")
    print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), end="")


def _resolve(ref: str, directory: Path | None):
    """(policy, chain, source) for a policy id in a directory, or a policy file."""
    from guard.policy.loader import load_policy_dir, load_policy_files

    path = Path(ref)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        policy_set = load_policy_files([path])
        (pid,) = [i for i, src in policy_set.sources.items() if src.resolve() == path.resolve()]
    else:
        policy_set = load_policy_dir(directory or _default_dir())
        pid = ref
    policy = policy_set.get(pid)
    return policy, policy_set.chains.get(pid, (pid,)), policy_set.sources.get(pid)


# --------------------------------------------------------------------------- test


@policy_app.command("test")
def test(
    path: Path = typer.Argument(..., help="policy file, or a directory (the cases file names the policy)"),
    cases: Path = typer.Option(..., "--cases", help="cases YAML (see policies/tests/)"),
    timeout: float | None = typer.Option(None, "--timeout", help="seconds per guard [default: GUARD_CHECK_TIMEOUT_S]"),
) -> None:
    """Run test cases through the real models and the policy; exit 1 on any mismatch."""
    from guard.policy.cases import load_cases
    from guard.settings import get_settings

    cases_file = load_cases(cases)
    if path.is_dir():
        policy, _, _ = _resolve(cases_file.policy or get_settings().default_policy, path)
    else:
        policy, _, _ = _resolve(str(path), None)
    settings = get_settings()
    outcomes = asyncio.run(_run_cases(policy, cases_file, settings, timeout or settings.check_timeout_s))
    _print_outcomes(policy, outcomes)
    if any(o.status != "pass" for o in outcomes):
        raise typer.Exit(EXIT_FAILURE)


async def _run_cases(policy, cases_file, settings, timeout: float):
    from guard.checks import run_checks
    from guard.executor.inprocess import InProcessExecutor
    from guard.models.registry import DEMO_LLAMA_GUARD_FAMILY
    from guard.policy.cases import run_cases

    executor = InProcessExecutor.from_settings(settings)
    family = settings.family or (DEMO_LLAMA_GUARD_FAMILY if not settings.llama_guard else None)
    try:
        # Policy tests judge decisions, not latency: the models load before the first case, so a
        # slow load is not a timed-out check.
        for loading in executor.warm_up():
            await asyncio.to_thread(loading.join)
        return await run_cases(policy, cases_file, lambda plan: run_checks(executor, plan, timeout), family=family)
    finally:
        executor.close()


def _print_outcomes(policy, outcomes) -> None:
    rows = [("CASE", "DIRECTION", "EXPECTED", "GOT", "RESULT", "REASONS")]
    for o in outcomes:
        reasons = ", ".join(f"{r.code or r.kind}={r.score:.2f}" if r.score is not None else (r.code or r.kind)
                            for r in o.decision.reasons)
        result = o.status.upper() + (f" ({o.problem})" if o.problem else "")
        rows.append((o.case.label(o.index), o.case.direction, o.case.expect.value, o.decision.action.value,
                     result, reasons))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[5])
    passed = sum(o.status == "pass" for o in outcomes)
    print(f"{passed}/{len(outcomes)} cases pass under {policy.id} v{policy.version} ({policy.content_hash[:12]})")


# --------------------------------------------------------------------------- replay


@policy_app.command("replay")
def replay(
    records: Path = typer.Option(..., "--records", help="audit records, one JSON object per line"),
    policy_ref: str = typer.Option(..., "--policy", help="policy file, or policy id in --dir"),
    directory: Path | None = typer.Option(None, "--dir", help="policy directory for an id"),
    limit: int = typer.Option(50, "--show", help="list at most this many changed decisions"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON report"),
) -> None:
    """Re-decide recorded guard results under another policy (no model runs) and list what changes."""
    from guard.policy.replay import read_records, replay as run_replay, summary_line

    policy, _, _ = _resolve(policy_ref, directory)
    report = run_replay(read_records(records), policy)
    if as_json:
        print(json.dumps({
            "policy": report.policy.model_dump(), "total": report.total, "replayed": report.replayed,
            "skipped": report.skipped, "unscanned": report.unscanned, "changed": report.changed,
            "changes": [_change_row(c) for c in report.changes],
        }, indent=2))
        return
    for change in report.changes[:limit]:
        row = _change_row(change)
        print(f"{row['record_id']}  {row['direction']:<13} {row['tenant']:<12} "
              f"{row['old']} -> {row['new']}  {', '.join(row['reasons'])}")
    if report.changed > limit:
        print(f"... and {report.changed - limit} more")
    print(summary_line(report))


def _change_row(change) -> dict:
    def show_action(decision) -> str:
        text = decision.action.value
        return text if decision.effective_action is decision.action else f"{text}(shadow)"

    return {
        "record_id": change.record.id, "request_id": change.record.request_id, "tenant": change.record.tenant,
        "direction": change.record.direction, "old": show_action(change.old), "new": show_action(change.new),
        "reasons": [r.code or r.kind for r in change.new.reasons],
    }
