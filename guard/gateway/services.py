"""Everything the gateway holds for its lifetime, built once from settings (or given by a test).

``build_services`` opens the policy store, the executor (in-process or Celery, behind the judgement
cache), the audit store and the upstream pool; ``GatewayServices.start``/``close`` are called by
the app's lifespan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from guard import metrics
from guard.audit import AuditStore, open_store
from guard.executor.base import Executor, create_executor
from guard.executor.cache import CachingExecutor
from guard.gateway.config import GatewayConfig, load_config
from guard.gateway.moderation import DEFAULT_MAP, ModerationMap, load_moderation_map
from guard.gateway.upstream import UpstreamPool
from guard.models.registry import DEMO_LLAMA_GUARD_FAMILY
from guard.policy import PolicyStore
from guard.settings import GuardSettings

log = logging.getLogger("guard.gateway")


@dataclass
class GatewayServices:
    settings: GuardSettings
    config: GatewayConfig
    policies: PolicyStore
    executor: Executor
    audit: AuditStore
    upstreams: UpstreamPool
    moderation_map: ModerationMap = field(default_factory=load_moderation_map)
    # Llama Guard prompt family of the served model (for policies with custom categories).
    family: str | None = None
    watch_policies: bool = True

    def start(self) -> None:
        self.policies.add_listener(metrics.observe_policy_reload)
        if self.watch_policies:
            self.policies.start()
        warm_up = getattr(self.executor, "warm_up", None)
        if warm_up is not None:
            warm_up()

    async def close(self) -> None:
        await self.upstreams.aclose()
        if self.watch_policies:
            self.policies.stop()
        self.executor.close()
        self.audit.close()


def llama_guard_family(settings: GuardSettings) -> str | None:
    if settings.family:
        return settings.family
    return DEMO_LLAMA_GUARD_FAMILY if not settings.llama_guard else None


def build_services(settings: GuardSettings, *, moderation_map: Path = DEFAULT_MAP) -> GatewayServices:
    """Open everything; a bad policy directory, config file or audit URL refuses to start."""
    config: GatewayConfig = load_config(settings.config_file, settings)
    policies = PolicyStore(settings.policies_dir, default_id=settings.default_policy)
    audit = open_store(settings.audit_url, settings=settings)
    # Behind the judgement cache (GUARD_JUDGEMENT_CACHE_SIZE): a re-sent history is not judged again.
    executor = CachingExecutor.wrap(create_executor(settings), settings)
    return GatewayServices(
        settings=settings,
        config=config,
        policies=policies,
        executor=executor,
        audit=audit,
        upstreams=UpstreamPool(timeout_s=settings.upstream_timeout_s),
        moderation_map=load_moderation_map(moderation_map),
        family=llama_guard_family(settings),
    )
