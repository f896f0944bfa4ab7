"""Process settings, read from the environment with the ``GUARD_`` prefix (pydantic-settings).

CLI flags override these; a flag's default comes from here, so every flag can also be set by its
``GUARD_`` variable.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DType = Literal["auto", "float32", "bfloat16", "float16"]


class GuardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GUARD_", env_file=None, extra="ignore")

    # ---- models (a hub id or a local directory; empty = the demo models)
    llama_guard: str = ""
    llama_guard_revision: str | None = None
    family: str | None = None  # llama-guard-3-1b, llama-guard-3-8b, llama-guard-4, ...
    prompt_guard: str = ""
    prompt_guard_revision: str | None = None
    # Overlap of consecutive Prompt Guard segments of a long text, in the family's unit (PG2 tokens,
    # default 64; PG1 characters, default 128), so a phrase across a boundary is scanned whole.
    prompt_guard_overlap: int | None = None
    dtype: DType = "auto"
    device: str = "auto"
    demo_models_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "guard" / "demo-models")

    # ---- batching (in-process executor and Celery workers)
    max_batch_size: int = 16
    # How long a batch waits for more requests after its first. 0 = greedy: a batch is whatever is
    # queued when the model is free, so a lone check never waits and batches grow under load by
    # themselves; a few ms can fill GPU batches better under steady, moderate traffic.
    max_wait_ms: float = 0.0
    # Guard results kept in memory (an LRU) so a request judged before is not judged again: a chat
    # re-sends its history, whose windows earlier requests judged (guard.executor.cache). 0 = off.
    judgement_cache_size: int = Field(default=10_000, ge=0)

    # ---- executor / Celery
    broker_url: str | None = None
    result_backend: str | None = None
    check_timeout_s: float = 30.0
    # Threads per worker process: tasks run concurrently and wait on the process's batcher.
    worker_concurrency: int = 32
    # Allocator of a worker process (workers.allocator): on jemalloc its memory levels off under load.
    worker_allocator: Literal["auto", "jemalloc", "system"] = "auto"
    # Redis redelivers a task a worker took but never acknowledged (killed) after this long. Keep it
    # above a worker's worst queue + batch time (else slow tasks run twice) and below the check
    # timeout if a killed worker's checks should still be answered in time.
    broker_visibility_timeout_s: float = 60.0
    # How often workers sweep for such unacknowledged tasks.
    broker_restore_interval_s: float = 5.0

    # ---- policies
    policies_dir: Path = Path("policies")
    default_policy: str = "default"

    # ---- audit
    audit_url: str = "sqlite:///guard-audit.sqlite3"
    audit_on_failure: Literal["fail_closed", "journal"] = "fail_closed"
    audit_journal: Path = Path("guard-audit.journal.jsonl")
    # HMAC key that signs prune checkpoints; without one they are only hashed (verify warns).
    audit_signing_key: SecretStr | None = None

    # ---- gateway
    host: str = "127.0.0.1"
    port: int = 8000
    upstream: str | None = None
    upstream_api_key_env: str = "GUARD_UPSTREAM_API_KEY"
    upstream_timeout_s: float = 60.0
    config_file: Path | None = None
    open_mode: bool | None = None  # None = on for loopback binds only
    max_body_bytes: int = 1_000_000
    max_messages: int = 256
    max_message_chars: int = 100_000
    # Seconds an idle client connection stays open. Above the idle expiry of client pools (httpx
    # 5 s, aiohttp 15 s) and of load balancers in front (60 s is common): the side that closes first
    # must be the client, else a request sent as the server closes is reset.
    keep_alive_s: float = 75.0
    # Prometheus without a key: /metrics on a listener of its own (keep it off the public address);
    # the API listener's /metrics needs an admin key either way.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None


@lru_cache(maxsize=1)
def get_settings() -> GuardSettings:
    return GuardSettings()
