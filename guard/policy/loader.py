"""Load a directory of policy files: parse (with line marks), resolve ``extends``, validate, hash.

* Policy files are the ``*.yaml`` / ``*.yml`` files directly in the directory (subdirectories,
  such as ``policies/tests/`` for test cases, and dot-files are skipped). ``id`` defaults to the
  file name without its extension; ids are unique.
* ``extends: PARENT`` merges the file over the resolved parent: mappings merge key by key, lists
  and scalars replace, an empty mapping (``{}``) clears the inherited one. ``id``, ``version``, ``description``, ``extends`` and ``attach`` are never
  inherited. Chains may be any depth; cycles and unknown parents are errors.
* Every problem is a ``PolicyIssue`` printed as ``file:line: message``; the line is the line of the
  offending key (or of its nearest parent key when the key is missing), in whichever file of the
  chain set it.
* A policy's content hash is the sha256 of its canonical resolved JSON (``Policy.content_hash``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from pydantic import ValidationError

from guard.errors import ConfigError, PolicyNotFound
from guard.policy import tenancy
from guard.policy.schema import Policy, code_issues
from guard.policy.yamlmarks import Loc, YamlIssue, load_marked

NOT_INHERITED = ("id", "version", "description", "extends", "attach")
POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class PolicyIssue:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class PolicyLoadError(ConfigError):
    """One or more policy files are invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[PolicyIssue]) -> None:
        self.issues = list(issues)
        more = f" (and {len(self.issues) - 1} more)" if len(self.issues) > 1 else ""
        super().__init__(f"{self.issues[0]}{more}" if self.issues else "invalid policy")


Origins = dict[Loc, tuple[str, int]]


@dataclass
class _RawFile:
    path: Path
    display: str
    id: str
    data: dict[str, Any] | None = None
    lines: dict[Loc, int] = field(default_factory=dict)
    issues: list[PolicyIssue] = field(default_factory=list)

    def origins(self) -> Origins:
        return {loc: (self.display, line) for loc, line in self.lines.items()}

    def line(self, loc: Loc) -> int | None:
        return self.lines.get(loc)


@dataclass(frozen=True)
class PolicySet:
    """Resolved policies by id, with where each came from and its ``extends`` chain."""

    policies: dict[str, Policy]
    sources: dict[str, Path] = field(default_factory=dict)
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default_id: str | None = None
    directory: Path | None = None

    def get(self, policy_id: str) -> Policy:
        try:
            return self.policies[policy_id]
        except KeyError:
            known = ", ".join(sorted(self.policies)) or "none"
            raise PolicyNotFound(f"no policy {policy_id!r} (known: {known})", param="policy") from None

    @property
    def default(self) -> Policy:
        if self.default_id is None:
            raise PolicyNotFound("no default policy configured", param="policy")
        return self.get(self.default_id)

    def select(self, *, requested: str | None = None, api_key: str | None = None, tenant: str | None = None,
               route: str | None = None) -> Policy:
        """The policy for a request (see ``guard.policy.tenancy`` for the precedence)."""
        if requested:
            return self.get(requested)
        chosen = tenancy.match(self._attachments, api_key=api_key, tenant=tenant, route=route)
        return self.get(chosen) if chosen else self.default

    @property
    def _attachments(self) -> list[tenancy.Attachment]:
        cached = self.__dict__.get("_attachments_cache")
        if cached is None:
            cached = tenancy.attachments(self.policies.values())
            object.__setattr__(self, "_attachments_cache", cached)
        return cached

    @property
    def fingerprint(self) -> str:
        """sha256 over (id, content hash) of every policy: changes iff some policy changed."""
        text = "\n".join(f"{pid} {p.content_hash}" for pid, p in sorted(self.policies.items()))
        return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- entry points


def policy_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ConfigError(f"policy directory {directory} does not exist")
    return sorted(p for p in directory.iterdir()
                  if p.suffix in POLICY_SUFFIXES and p.is_file() and not p.name.startswith("."))


def load_policy_dir(directory: Path | str, *, default_id: str | None = None) -> PolicySet:
    """Load and validate every policy in ``directory``; ``PolicyLoadError`` lists all problems.
    With ``default_id``, that policy must exist."""
    directory = Path(directory)
    raws = [_parse_file(p) for p in policy_files(directory)]
    policy_set = _build(raws, targets=None, directory=directory, default_id=default_id)
    if default_id is not None and default_id not in policy_set.policies:
        raise PolicyLoadError([PolicyIssue(str(directory), None, f"default policy {default_id!r} not found")])
    return policy_set


def load_policy_files(paths: Iterable[Path | str]) -> PolicySet:
    """Load the given files; a file's ``extends`` is looked up among the files of its directory.
    Problems of other files in those directories are ignored unless a requested file inherits
    from them."""
    targets = [Path(p) for p in paths]
    for path in targets:
        if not path.is_file():
            raise PolicyLoadError([PolicyIssue(str(path), None, "no such file")])
    wanted = {p.resolve() for p in targets}
    raws = [_parse_file(p) for p in targets]
    for directory in sorted({p.parent for p in targets}):
        raws += [_parse_file(p) for p in policy_files(directory) if p.resolve() not in wanted]
    return _build(raws, targets={r.id for r in raws[: len(targets)]}, directory=None, default_id=None)


def load_policy_file(path: Path | str) -> Policy:
    """The resolved policy of one file."""
    policy_set = load_policy_files([path])
    (policy_id,) = [pid for pid, src in policy_set.sources.items() if src.resolve() == Path(path).resolve()]
    return policy_set.policies[policy_id]


def policy_from_data(data: dict[str, Any], *, parents: Sequence[dict[str, Any]] = ()) -> Policy:
    """Build a policy from plain data (tests, tools); ``parents`` are merged underneath, nearest
    parent last, with the same rules as ``extends``."""
    merged: dict[str, Any] = {}
    for layer in (*parents, data):
        merged = _deep_merge({k: v for k, v in merged.items() if k not in NOT_INHERITED}, layer)
    merged.pop("extends", None)
    return Policy.model_validate(merged)


# --------------------------------------------------------------------------- parsing


def _parse_file(path: Path) -> _RawFile:
    display = str(path)
    raw = _RawFile(path=path, display=display, id=path.stem)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raw.issues.append(PolicyIssue(display, None, f"cannot read: {error}"))
        return raw
    try:
        data, lines = load_marked(text)
    except YamlIssue as issue:
        raw.issues.append(PolicyIssue(display, issue.line, issue.message))
        return raw
    if not isinstance(data, dict):
        raw.issues.append(PolicyIssue(display, 1, "a policy file must be a mapping (key: value lines)"))
        return raw
    raw.data, raw.lines = data, lines
    if isinstance(data.get("id"), str):
        raw.id = data["id"]
    extends = data.get("extends")
    if extends is not None and not isinstance(extends, str):
        raw.issues.append(PolicyIssue(display, raw.line(("extends",)), "extends: must be a policy id (a string)"))
    return raw


# --------------------------------------------------------------------------- resolving


class _Resolver:
    def __init__(self, raws: list[_RawFile]) -> None:
        self.by_id: dict[str, _RawFile] = {}
        self.issues: list[PolicyIssue] = []
        for raw in raws:
            other = self.by_id.get(raw.id)
            if other is not None:
                self.issues.append(PolicyIssue(raw.display, raw.line(("id",)) or 1,
                                               f"duplicate policy id {raw.id!r} (also in {other.display})"))
                continue
            self.by_id[raw.id] = raw
        self.done: dict[str, tuple[dict[str, Any], Origins, tuple[str, ...]] | None] = {}

    def resolve(self, policy_id: str, stack: tuple[str, ...] = ()) -> tuple[dict[str, Any], Origins, tuple[str, ...]] | None:
        """(merged data, origins, chain) or None after recording issues."""
        if policy_id in self.done:
            return self.done[policy_id]
        raw = self.by_id[policy_id]
        result = None
        if raw.issues or raw.data is None:
            self.issues.extend(raw.issues)
        else:
            result = self._merge_with_parent(raw, stack)
        self.done[policy_id] = result
        return result

    def _merge_with_parent(self, raw: _RawFile, stack: tuple[str, ...]):
        data = {k: v for k, v in raw.data.items() if k != "extends"}
        data.setdefault("id", raw.id)
        parent_id = raw.data.get("extends")
        if parent_id is None:
            return data, raw.origins(), (raw.id,)
        where = raw.line(("extends",))
        if parent_id == raw.id or parent_id in stack:
            cycle = " -> ".join((*stack, raw.id, parent_id))
            self.issues.append(PolicyIssue(raw.display, where, f"extends: cycle {cycle}"))
            return None
        if parent_id not in self.by_id:
            known = ", ".join(sorted(self.by_id)) or "none"
            self.issues.append(PolicyIssue(raw.display, where, f"extends: no policy {parent_id!r} (known: {known})"))
            return None
        parent = self.resolve(parent_id, (*stack, raw.id))
        if parent is None:
            self.issues.append(PolicyIssue(raw.display, where, f"extends: parent policy {parent_id!r} is invalid"))
            return None
        parent_data, parent_origins, chain = parent
        inherited = {k: v for k, v in parent_data.items() if k not in NOT_INHERITED}
        merged = _deep_merge(inherited, data)
        return merged, _merge_origins(merged, parent_origins, raw.origins()), (raw.id, *chain)


def _deep_merge(base: Any, over: Any) -> Any:
    """Child over parent: mappings merge key by key; anything else, and an empty mapping (the
    way to clear an inherited one: ``categories: {}``), replaces."""
    if isinstance(base, dict) and isinstance(over, dict) and over:
        out = dict(base)
        for key, value in over.items():
            out[key] = _deep_merge(base[key], value) if key in base else value
        return out
    return over


def _merge_origins(merged: Any, base: Origins, over: Origins) -> Origins:
    """Origin of every path of the merged value: the child's where it set the path, else the parent's."""
    out: Origins = {(): over[()]} if () in over else {}

    def walk(value: Any, path: Loc) -> None:
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in items:
            loc = (*path, key)
            origin = over.get(loc) or base.get(loc)
            if origin:
                out[loc] = origin
            walk(child, loc)

    walk(merged, ())
    return out


def _located(loc: Loc, message: str, origins: Origins, fallback: str) -> PolicyIssue:
    """An issue at ``loc``: the line of the deepest part of ``loc`` that some file set."""
    origin = None
    for end in range(len(loc), -1, -1):
        origin = origins.get(loc[:end])
        if origin:
            break
    file, line = origin or (fallback, None)
    where = ".".join(str(part) for part in loc if part != "[key]")
    return PolicyIssue(file, line, f"{where}: {message}" if where else message)


def _issues_from_validation(error: ValidationError, origins: Origins, fallback: str) -> list[PolicyIssue]:
    return [_located(tuple(item["loc"]), item["msg"].removeprefix("Value error, "), origins, fallback)
            for item in error.errors()]


def _build(raws: list[_RawFile], *, targets: set[str] | None, directory: Path | None,
           default_id: str | None) -> PolicySet:
    resolver = _Resolver(raws)
    issues = resolver.issues
    policies: dict[str, Policy] = {}
    origins_by_id: dict[str, Origins] = {}
    chains: dict[str, tuple[str, ...]] = {}
    for policy_id in sorted(resolver.by_id):
        if targets is not None and policy_id not in targets:
            continue
        resolved = resolver.resolve(policy_id)
        if resolved is None:
            continue
        data, origins, chain = resolved
        raw = resolver.by_id[policy_id]
        try:
            policies[policy_id] = Policy.model_validate(data)
        except ValidationError as error:
            issues.extend(_issues_from_validation(error, origins, raw.display))
            if not any(e["type"] == "unknown_category" for e in error.errors()):
                # Field errors stop pydantic before the code check: run it on the raw data.
                issues.extend(_located(loc, message, origins, raw.display) for loc, _, message in code_issues(data))
            continue
        origins_by_id[policy_id], chains[policy_id] = origins, chain
    for attachment, message in tenancy.conflicts(tenancy.attachments(policies.values())):
        origin = origins_by_id[attachment.policy_id].get(("attach", attachment.kind, attachment.index))
        file, line = origin or (resolver.by_id[attachment.policy_id].display, None)
        issues.append(PolicyIssue(file, line, message))
    if issues:
        unique = list(dict.fromkeys(issues))
        raise PolicyLoadError(sorted(unique, key=lambda i: (i.file, i.line or 0)))
    return PolicySet(
        policies=policies,
        sources={pid: resolver.by_id[pid].path for pid in policies},
        chains=chains,
        default_id=default_id,
        directory=directory,
    )
