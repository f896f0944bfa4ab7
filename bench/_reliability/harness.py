"""A gateway of our own for fault scenarios: the shipped default policy (guard timeouts raised so a
busy CPU does not turn slow checks into timeouts), a fail-open variant, a SQLite audit store with a
journal, the demo models in-process, any upstream; plus metric and audit readers.

Used by ``tests/faults`` (CI-sized) and ``bench/reliability.py`` (the same scenarios, counted)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from guard.audit import AuditFilters, SqlAuditStore
from guard.gateway.app import create_app
from guard.gateway.server import ServerThread
from guard.gateway.services import GatewayServices, build_services
from guard.settings import GuardSettings
from guard.types import AuditRecord

REPO = Path(__file__).resolve().parents[2]
FAMILY = "llama-guard-3-1b"
FAIL_OPEN = "id: fail-open\nextends: default\nguards:\n  llama_guard: {on_error: allow}\n  prompt_guard: {on_error: allow}\n"


def demo_models() -> Any:
    """The demo models the test suite uses (``GUARD_TEST_MODELS_DIR``, else
    ``~/.cache/guard/test-models``): the benchmark then judges with the very same weights."""
    import os

    from guard.models.testing import ensure_demo_models

    root = os.environ.get("GUARD_TEST_MODELS_DIR") or str(Path.home() / ".cache" / "guard" / "test-models")
    return ensure_demo_models(Path(root))


def write_policies(directory: Path, *, timeout_ms: int = 60_000) -> Path:
    """``policies/default.yaml`` (timeouts raised, system messages trusted) and ``fail-open`` extending it."""
    directory.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((REPO / "policies" / "default.yaml").read_text(encoding="utf-8"))
    for guard in ("llama_guard", "prompt_guard"):
        data["guards"][guard]["timeout_ms"] = timeout_ms
    # The faulty upstream is scripted by system messages: here they are the operator's own text.
    data["judged_text"]["system"] = "trusted"
    (directory / "default.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (directory / "fail-open.yaml").write_text(FAIL_OPEN, encoding="utf-8")
    return directory


@dataclass
class LiveGateway:
    server: ServerThread
    services: GatewayServices
    root: Path
    audit_url: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def audit_file(self) -> Path:
        return self.root / "audit.sqlite3"

    @property
    def journal(self) -> Path:
        return self.root / "audit.journal.jsonl"

    @property
    def policies_dir(self) -> Path:
        return self.root / "policies"

    def records(self, request_id: str) -> list[AuditRecord]:
        store = SqlAuditStore(self.audit_url, create=False)
        try:
            return store.query(AuditFilters(request_id=request_id, limit=100, newest_first=False))
        finally:
            store.close()


def gateway_settings(root: Path, demo: Any, upstream_url: str, **overrides: Any) -> GuardSettings:
    values: dict[str, Any] = dict(
        llama_guard=str(demo.llama_guard), family=FAMILY, prompt_guard=str(demo.prompt_guard_2),
        dtype="float32", device="cpu", upstream=f"{upstream_url}/v1", upstream_timeout_s=2.0,
        policies_dir=write_policies(root / "policies"), default_policy="default", config_file=None,
        audit_url=f"sqlite:///{root / 'audit.sqlite3'}", audit_on_failure="journal",
        audit_journal=root / "audit.journal.jsonl", broker_url=None, open_mode=None, host="127.0.0.1",
        max_message_chars=200_000, max_body_bytes=2_000_000)
    values.update(overrides)
    return GuardSettings(**values)


@contextmanager
def live_gateway(root: Path, demo: Any, upstream_url: str, *, poll_interval: float = 0.5,
                 **overrides: Any) -> Iterator[LiveGateway]:
    settings = gateway_settings(root, demo, upstream_url, **overrides)
    services = build_services(settings)
    services.policies.poll_interval = poll_interval
    server = ServerThread(create_app(settings, services)).start()
    try:
        yield LiveGateway(server, services, root, settings.audit_url)
    finally:
        server.stop()


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# --------------------------------------------------------------------------- metrics


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric_total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


class MetricDelta:
    """Metric values now minus at construction (metrics are process-wide: compare deltas)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.before = metric_samples(url)

    def __call__(self, name: str, **labels: str) -> float:
        return metric_total(metric_samples(self.url), name, **labels) - metric_total(self.before, name, **labels)


# --------------------------------------------------------------------------- responses


def error_shaped(body: Any) -> bool:
    """OpenAI's error shape: {"error": {"message": str, "type": str, "param", "code"}}."""
    error = body.get("error") if isinstance(body, dict) else None
    return (isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)
            and "param" in error and "code" in error)


def sse_events(text: str) -> list[Any]:
    """The ``data:`` payloads of a server-sent-event body (JSON decoded; ``[DONE]`` as the string)."""
    import json

    events: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
