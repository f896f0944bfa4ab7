"""Which policy a request uses: explicit choice, then attachments (``attach:`` in policy files),
then the default.

Precedence, first match wins:

1. ``requested``: a policy the caller named or its API key is pinned to (the gateway checks the
   caller may use it);
2. ``attach.keys`` matching the API key id;
3. ``attach.tenants`` matching the tenant;
4. ``attach.routes`` matching the request path;
5. the default policy (``GUARD_DEFAULT_POLICY``, ``default`` unless configured).

Within one kind, an exact entry beats a pattern (fnmatch: ``dev-*``), a longer pattern (more
literal characters) beats a shorter one, and a remaining tie goes to the policy id that sorts
first. The same exact entry attached by two policies is a load error (an operator mistake).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Iterable, Iterator, Literal

from guard.policy.schema import Policy

AttachKind = Literal["keys", "tenants", "routes"]
KINDS: tuple[AttachKind, ...] = ("keys", "tenants", "routes")
_WILDCARDS = set("*?[")


@dataclass(frozen=True)
class Attachment:
    kind: AttachKind
    pattern: str
    policy_id: str
    index: int  # position in the policy's `attach.<kind>` list (for error lines)

    @property
    def exact(self) -> bool:
        return not (_WILDCARDS & set(self.pattern))

    def specificity(self) -> tuple[int, int]:
        return (1 if self.exact else 0, sum(1 for c in self.pattern if c not in _WILDCARDS))

    def matches(self, value: str) -> bool:
        return value == self.pattern if self.exact else fnmatchcase(value, self.pattern)


def attachments(policies: Iterable[Policy]) -> list[Attachment]:
    return [
        Attachment(kind, pattern, policy.id, index)
        for policy in sorted(policies, key=lambda p: p.id)
        for kind in KINDS
        for index, pattern in enumerate(getattr(policy.attach, kind))
    ]


def conflicts(items: list[Attachment]) -> Iterator[tuple[Attachment, str]]:
    """Exact entries attached by two policies: (the later attachment, message)."""
    seen: dict[tuple[str, str], Attachment] = {}
    for item in items:
        if not item.exact:
            continue
        first = seen.setdefault((item.kind, item.pattern), item)
        if first.policy_id != item.policy_id:
            yield item, (f"attach.{item.kind}: {item.pattern!r} is already attached to policy "
                         f"{first.policy_id!r}")


def match(items: list[Attachment], *, api_key: str | None = None, tenant: str | None = None,
          route: str | None = None) -> str | None:
    """The policy id the attachments pick for this request, or None (= the default)."""
    values: dict[AttachKind, str | None] = {"keys": api_key, "tenants": tenant, "routes": route}
    for kind in KINDS:
        value = values[kind]
        if value is None:
            continue
        hits = [a for a in items if a.kind == kind and a.matches(value)]
        if hits:
            best = max(hits, key=lambda a: (a.specificity(), _reverse(a.policy_id)))
            return best.policy_id
    return None


def _reverse(text: str) -> tuple[int, ...]:
    # max() with this key prefers the id that sorts first.
    return tuple(-ord(c) for c in text) + (0,)
