"""The gateway config file: tenants, their API keys (as sha256 hashes), policies and upstreams.

```yaml
tenants:
  acme:
    policies: [default, strict]     # the only policies this tenant may name; first = default
    upstream: http://127.0.0.1:8001/v1
    upstream_api_key_env: ACME_UPSTREAM_KEY   # the key is read from this env variable
    routes:                         # per requested model: another upstream
      gpt-4o-mini: {upstream: https://example.invalid/v1, upstream_api_key_env: OPENAI_API_KEY}
keys:
  - id: acme-app                    # goes into audit records, never the key itself
    sha256: 9f86d08...              # sha256 of the bearer key (`guard serve --hash-key KEY`)
    tenant: acme
    policy: strict                  # optional: pin this key to one of the tenant's policies
    admin: false                    # admin keys may read the audit log and review escalations
open_tenant: default                # who key-less requests are in open mode
```

Without a file, one tenant ``default`` uses the settings' upstream and may use every policy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from guard.errors import ConfigError
from guard.settings import GuardSettings

ANY_POLICY = "*"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamRoute(_Config):
    upstream: str
    upstream_api_key_env: str | None = None


class TenantConfig(_Config):
    policies: list[str] = Field(default_factory=lambda: [ANY_POLICY])
    default_policy: str | None = None
    upstream: str | None = None
    upstream_api_key_env: str | None = None
    routes: dict[str, UpstreamRoute] = Field(default_factory=dict)

    def allows(self, policy_id: str) -> bool:
        return ANY_POLICY in self.policies or policy_id in self.policies

    def route_for(self, model: str) -> UpstreamRoute | None:
        route = self.routes.get(model)
        if route is not None:
            return route
        if self.upstream:
            return UpstreamRoute(upstream=self.upstream, upstream_api_key_env=self.upstream_api_key_env)
        return None


class ApiKey(_Config):
    id: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: str
    policy: str | None = None
    admin: bool = False


class GatewayConfig(_Config):
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    keys: list[ApiKey] = Field(default_factory=list)
    open_tenant: str = "default"

    @model_validator(mode="after")
    def _keys_name_known_tenants(self) -> GatewayConfig:
        for key in self.keys:
            if key.tenant not in self.tenants:
                raise ValueError(f"key {key.id!r} names unknown tenant {key.tenant!r}")
            tenant = self.tenants[key.tenant]
            if key.policy and not tenant.allows(key.policy):
                raise ValueError(f"key {key.id!r} pins policy {key.policy!r} outside tenant {key.tenant!r}")
        ids = [k.id for k in self.keys]
        if len(ids) != len(set(ids)):
            raise ValueError("key ids must be unique")
        return self

    def tenant(self, name: str) -> TenantConfig:
        try:
            return self.tenants[name]
        except KeyError:
            raise ConfigError(f"unknown tenant {name!r}") from None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_config(path: Path | None, settings: GuardSettings) -> GatewayConfig:
    """Read the config file (or build the single-tenant default) and fill in settings' upstream."""
    if path is None or Path(path) == Path(""):  # GUARD_CONFIG_FILE= (empty) means no file
        return _with_default_upstream(default_config(settings), settings)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        config = GatewayConfig.model_validate(raw)
    except OSError as exc:
        raise ConfigError(f"cannot read gateway config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"gateway config {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"gateway config {path}: {where}: {first['msg']}") from None
    return _with_default_upstream(config, settings)


def default_config(settings: GuardSettings) -> GatewayConfig:
    tenant = TenantConfig(upstream=settings.upstream, upstream_api_key_env=settings.upstream_api_key_env)
    return GatewayConfig(tenants={"default": tenant})


def _with_default_upstream(config: GatewayConfig, settings: GuardSettings) -> GatewayConfig:
    """Tenants without an upstream of their own use the one from settings (``--upstream``); the open
    tenant, when the file does not define it, may use the default policy only."""
    tenants = {
        name: t
        if t.upstream or not settings.upstream
        else t.model_copy(
            update={"upstream": settings.upstream, "upstream_api_key_env": settings.upstream_api_key_env}
        )
        for name, t in config.tenants.items()
    }
    if config.open_tenant not in tenants:
        tenants[config.open_tenant] = TenantConfig(
            policies=[settings.default_policy],
            upstream=settings.upstream,
            upstream_api_key_env=settings.upstream_api_key_env,
        )
    return config.model_copy(update={"tenants": tenants})


def api_key_from_env(env_name: str | None) -> str | None:
    return os.environ.get(env_name) if env_name else None
