"""Bearer API keys -> tenants. Keys are known only by their sha256 hash.

Open mode (local use) lets requests through without a known key, as the config's ``open_tenant``.
By default it is on only when the gateway is bound to a loopback address, and then admits loopback
clients only. Turned on explicitly (``--open`` / ``GUARD_OPEN_MODE=true``) it admits every client
the bind address lets in: the operator's choice (e.g. a container whose port is published on the
host's loopback), logged as a warning at start-up. Turned off, every request needs a known key.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from guard.gateway.config import ApiKey, GatewayConfig, hash_key
from guard.gateway.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    tenant: str
    key_id: str | None = None
    policy: str | None = None  # a key may be pinned to one policy
    admin: bool = False
    # Let in by open mode from a loopback address: a user of the gateway's own machine.
    local: bool = False

    @property
    def operator_scope(self) -> tuple[bool, str | None]:
        """May this caller read the service's own state (``/metrics``, ``/readyz`` details), and
        for which tenant: an admin key sees its tenant's share, a local open-mode caller all
        (``None``); anyone else nothing."""
        if self.admin:
            return True, self.tenant
        return (True, None) if self.local and self.key_id is None else (False, None)


@functools.lru_cache(maxsize=1024)  # asked per request, for a few client addresses
def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_mode_default(bind_host: str, configured: bool | None) -> bool:
    return is_loopback(bind_host) if configured is None else configured


class Authenticator:
    def __init__(self, config: GatewayConfig, *, open_mode: bool, loopback_only: bool = True) -> None:
        self._by_hash = {k.sha256: k for k in config.keys}
        self._open_tenant = config.open_tenant
        self.open_mode = open_mode
        self.loopback_only = loopback_only

    def authenticate(self, authorization: str | None, client_host: str | None) -> Principal:
        token = _bearer(authorization)
        key = self._lookup(token) if token else None
        if key is not None:
            return Principal(tenant=key.tenant, key_id=key.id, policy=key.policy, admin=key.admin)
        if self.open_mode and (is_loopback(client_host) or not self.loopback_only):
            return Principal(tenant=self._open_tenant, local=is_loopback(client_host))
        if token is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        raise Unauthorized("incorrect API key provided")

    def _lookup(self, token: str) -> ApiKey | None:
        # A hash lookup leaks nothing useful about the key through timing: the digest is unguessable.
        return self._by_hash.get(hash_key(token))


def require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise Forbidden("this endpoint needs an admin API key")


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
