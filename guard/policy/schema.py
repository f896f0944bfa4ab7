"""The policy file schema: one frozen pydantic model per section, unknown keys rejected.

A ``Policy`` is always complete: every section has defaults, so a one-line file (``id: x``) is a
valid policy. Files may ``extends`` another policy; ``guard.policy.loader`` merges the files and
validates the result; a resolved policy has ``extends: null`` (the chain is kept beside it, in
``guard.policy.loader.PolicySet``).

What "crosses" means for a category (see ``guard.policy.decide``): a Llama Guard category ``code``
crosses its threshold ``t`` when ``category_scores[code] >= t`` (P(unsafe) x P(code listed first)),
or when the model's decoded output lists ``code`` and ``unsafe_score >= t``. Exactly at the
threshold counts as crossing.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Annotated, Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from guard.taxonomy import HAZARD_CODES, HAZARDS, check_custom_code
from guard.errors import BadInput
from guard.types import Action, Direction, MessageSource, Overflow, PolicyRef, Role

Threshold = Annotated[float, Field(ge=0.0, le=1.0)]
PolicyMode = Literal["enforce", "shadow"]
StreamMode = Literal["hold_back", "stream_first"]
BlockResponse = Literal["content_filter", "error"]
RetentionMode = Literal["full", "redacted", "none"]
InjectionScope = Literal["latest_turn", "window", "all"]
GuardName = Literal["llama_guard", "prompt_guard"]
JudgeTurns = Literal["all", "user", "latest"]
ReadingKind = Literal["markers", "joins", "base64", "hex", "url"]
SystemText = Literal["judge", "trusted"]

DEFAULT_REFUSAL = "Sorry, I can't help with that."


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- guards


class OnError(_Section):
    """What a failed or timed-out guard means, per direction. ``block`` = fail closed (default),
    ``allow`` = fail open; ``flag``/``escalate`` let the request through but mark it. The decision
    always carries a ``guard_error`` reason, so a fail-open is never a silent allow."""

    input: Action = Action.BLOCK
    output: Action = Action.BLOCK

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `on_error: allow` is short for both directions.
        if isinstance(value, (str, Action)):
            return {"input": value, "output": value}
        return value

    def for_direction(self, direction: Direction) -> Action:
        return self.input if direction == "input" else self.output


class LlamaGuardSettings(_Section):
    enabled: bool = True
    # Hub id or path of the model; None = the process default (GUARD_LLAMA_GUARD, else the demo).
    model: str | None = None
    # Prompt family, when the plan must know the model's default category list (custom categories).
    family: str | None = None
    directions: list[Direction] = Field(default_factory=lambda: ["input", "output"])
    timeout_ms: Annotated[int, Field(gt=0, le=600_000)] = 5_000
    on_error: OnError = Field(default_factory=OnError)

    def applies(self, direction: Direction) -> bool:
        return self.enabled and direction in self.directions


class PromptGuardSettings(_Section):
    """Prompt Guard scans input messages only (user text, tool results, retrieved documents)."""

    enabled: bool = True
    model: str | None = None
    timeout_ms: Annotated[int, Field(gt=0, le=600_000)] = 2_000
    on_error: OnError = Field(default_factory=OnError)

    def applies(self, direction: Direction) -> bool:
        return self.enabled and direction == "input"


class Guards(_Section):
    llama_guard: LlamaGuardSettings = Field(default_factory=LlamaGuardSettings)
    prompt_guard: PromptGuardSettings = Field(default_factory=PromptGuardSettings)

    def get(self, name: str) -> LlamaGuardSettings | PromptGuardSettings | None:
        return {"llama_guard": self.llama_guard, "prompt_guard": self.prompt_guard}.get(name)


# --------------------------------------------------------------------------- categories


class RuleOverride(_Section):
    """Fields that differ for one direction; anything left out comes from the category's base."""

    action: Action | None = None
    threshold: Threshold | None = None
    message: str | None = None


class EffectiveRule(_Section):
    action: Action
    threshold: float
    message: str | None = None


class CategoryRule(_Section):
    action: Action | None = None
    threshold: Threshold = 0.5
    message: str | None = None  # shown to the end user when this rule decides
    input: RuleOverride | None = None
    output: RuleOverride | None = None

    @model_validator(mode="after")
    def _every_direction_has_an_action(self) -> CategoryRule:
        if self.action is None:
            missing = [d for d in ("input", "output") if getattr(self, d) is None or getattr(self, d).action is None]
            if missing:
                raise ValueError(f"no action for {' and '.join(missing)}: set `action` (or `{missing[0]}.action`)")
        return self

    def for_direction(self, direction: Direction) -> EffectiveRule:
        override = self.input if direction == "input" else self.output
        action = (override.action if override and override.action else None) or self.action
        threshold = override.threshold if override and override.threshold is not None else self.threshold
        message = override.message if override and override.message is not None else self.message
        assert action is not None  # guaranteed by the validator
        return EffectiveRule(action=action, threshold=threshold, message=message)


class CustomCategory(_Section):
    name: Annotated[str, Field(min_length=1)]
    description: str = ""

    def prompt_text(self) -> str:
        """Text printed after ``"{code}: "`` in the Llama Guard prompt (name with its period, then
        the description on the next line, the way Llama Guard 2 lists its categories)."""
        name = self.name if self.name.endswith(".") else self.name + "."
        return f"{name}\n{self.description}" if self.description else name


# --------------------------------------------------------------------------- prompt injection


class SourceThresholds(_Section):
    """Thresholds for one message source; ``null`` turns that score off for the source."""

    jailbreak: Threshold | None = None
    injection: Threshold | None = None
    action: Action | None = None  # None = the section's action
    message: str | None = None

    @property
    def scanned(self) -> bool:
        return self.jailbreak is not None or self.injection is not None


class PromptInjection(_Section):
    action: Action = Action.BLOCK
    message: str | None = None
    user: SourceThresholds = Field(default_factory=lambda: SourceThresholds(jailbreak=0.9))
    tool: SourceThresholds = Field(default_factory=lambda: SourceThresholds(jailbreak=0.9, injection=0.8))
    document: SourceThresholds = Field(default_factory=lambda: SourceThresholds(jailbreak=0.9, injection=0.8))
    # Which input messages are scanned: all (default: the gateway is stateless, any message may be
    # new to it), the Llama Guard context window, or the latest user turn.
    scope: InjectionScope = "all"
    # A message whose `name` matches one of these (fnmatch) is retrieved context (source
    # `document`), whatever its role; otherwise role user -> `user`, role tool -> `tool`.
    document_names: list[str] = Field(default_factory=lambda: ["document", "document:*"])

    def source(self, name: MessageSource) -> SourceThresholds:
        return getattr(self, name)


# --------------------------------------------------------------------------- context, streaming


class Context(_Section):
    # Past turns judged beside the current one (a turn starts at a user message); null = all.
    turns: Annotated[int, Field(ge=0)] | None = 2
    # Roles whose messages Llama Guard sees.
    roles: list[Role] = Field(default_factory=lambda: ["user", "assistant"])
    # Which turns of an input Llama Guard judges, each as the last turn of its own window: `all`
    # (every user and assistant turn the request carries: in a stateless API the caller writes
    # the history too), `user` (every user turn), `latest` (the latest user turn; the rest is
    # context). One more Llama Guard prompt per judged turn, all in one executor call.
    judge: JudgeTurns = "all"
    # A window longer than the Llama Guard model reads: `split` judges it in pieces that each fit
    # (the worst piece decides), `refuse` answers the request with a `context_length_exceeded`
    # error (HTTP 400, CLI exit 2). Never truncated.
    overflow: Overflow = "split"

    @field_validator("roles")
    @classmethod
    def _roles(cls, roles: list[Role]) -> list[Role]:
        if "user" not in roles:
            raise ValueError("roles must include `user` (Llama Guard judges user turns)")
        return roles


class JudgedText(_Section):
    """How the guards' copy of the caller's text is made (``guard.policy.judged``). The text that
    goes upstream and into the audit log is never changed."""

    # Unicode NFKC, invisible characters dropped, look-alike letters folded, template markers
    # (``<|eot_id|>``, ``<END CONVERSATION>``, ...) neutralised.
    normalize: bool = True
    # Extra readings, each judged as a message of its own: `markers` (the pieces between template
    # markers), `joins` (two messages of one side in a row, read across the boundary), `base64`,
    # `hex`, `url` (encoded blobs, decoded).
    readings: list[ReadingKind] = Field(default_factory=lambda: ["markers", "joins", "base64", "hex", "url"])
    # Caller-written system messages: `judge` (as user text, by both guards) or `trusted` (the
    # operator's own prompt: context for the chat model, not judged).
    system: SystemText = "judge"


class Streaming(_Section):
    # hold_back: nothing unscanned reaches the client; stream_first: tokens go out, then the window
    # is checked and the stream is stopped if it crossed. Per category, with a default.
    default: StreamMode = "hold_back"
    categories: dict[str, StreamMode] = Field(default_factory=dict)
    window_tokens: Annotated[int, Field(gt=0, le=8192)] = 200
    overlap_tokens: Annotated[int, Field(ge=0)] = 50

    @model_validator(mode="after")
    def _overlap_below_window(self) -> Streaming:
        if self.overlap_tokens >= self.window_tokens:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be below window_tokens "
                             f"({self.window_tokens})")
        return self

    def mode_for(self, code: str) -> StreamMode:
        return self.categories.get(code, self.default)


# --------------------------------------------------------------------------- tenancy, audit


class Attach(_Section):
    """Which requests use this policy by default (never inherited through ``extends``).

    ``keys`` are API key ids (never the secret), ``tenants`` tenant names, ``routes`` request paths;
    each entry may be an fnmatch pattern (``dev-*``). See ``guard.policy.tenancy`` for precedence."""

    keys: list[str] = Field(default_factory=list)
    tenants: list[str] = Field(default_factory=list)
    routes: list[str] = Field(default_factory=list)


class Audit(_Section):
    retention: RetentionMode = "full"


# --------------------------------------------------------------------------- the policy

_CODE_HINT = "expected S1..S14 or a code declared in custom_categories"


def code_issues(data: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], Any, str]]:
    """(loc, input, message) for every unknown or invalid category code in policy data. Works on
    plain (even otherwise invalid) data, so the loader can report these beside field errors."""
    def mapping(value: Any) -> dict:
        return value if isinstance(value, dict) else {}

    custom = mapping(data.get("custom_categories"))
    for code in custom:
        if code in HAZARDS:
            yield ("custom_categories", code), code, \
                f"custom category {code!r} clashes with the hazard code {code} ({HAZARDS[code].name})"
        else:
            try:
                check_custom_code(str(code))
            except BadInput as error:
                yield ("custom_categories", code), code, error.message
    known = set(HAZARD_CODES) | set(custom)
    for loc, codes in ((("categories",), mapping(data.get("categories"))),
                       (("streaming", "categories"), mapping(mapping(data.get("streaming")).get("categories")))):
        for code in codes:
            if code not in known:
                yield (*loc, code), code, f"unknown category code {code!r} ({_CODE_HINT})"
    excluded = data.get("excluded_categories")
    for i, code in enumerate(excluded if isinstance(excluded, list) else []):
        # A non-string entry is a field error of its own (and may be unhashable: a list, a mapping).
        if isinstance(code, str) and code not in known:
            yield ("excluded_categories", i), code, f"unknown category code {code!r} ({_CODE_HINT})"
    if data.get("default_categories") is False and not custom:
        yield ("default_categories",), False, \
            "default_categories: false needs at least one custom category (nothing left to check)"



class Policy(_Section):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    version: str = "1"
    description: str = ""
    extends: str | None = None
    mode: PolicyMode = "enforce"
    guards: Guards = Field(default_factory=Guards)
    categories: dict[str, CategoryRule] = Field(default_factory=dict)
    # Rule for every judged category without an entry of its own.
    other_categories: CategoryRule = Field(
        default_factory=lambda: CategoryRule(action=Action.FLAG, threshold=0.5))
    custom_categories: dict[str, CustomCategory] = Field(default_factory=dict)
    # False: Llama Guard sees only the custom categories (they replace the model's list).
    default_categories: bool = True
    excluded_categories: list[str] = Field(default_factory=list)
    prompt_injection: PromptInjection = Field(default_factory=PromptInjection)
    context: Context = Field(default_factory=Context)
    judged_text: JudgedText = Field(default_factory=JudgedText)
    streaming: Streaming = Field(default_factory=Streaming)
    attach: Attach = Field(default_factory=Attach)
    refusal: str = DEFAULT_REFUSAL
    block_response: BlockResponse = "content_filter"
    # Start the upstream call while the input checks run (lower latency; tokens are not released
    # before the input decision either way).
    upstream_parallel: bool = False
    audit: Audit = Field(default_factory=Audit)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _codes_are_known(self) -> Policy:
        issues = list(self._code_issues())
        if issues:
            raise ValidationError.from_exception_data("Policy", [
                InitErrorDetails(type=PydanticCustomError("unknown_category", message), loc=loc, input=code)
                for loc, code, message in issues
            ])
        return self

    def _code_issues(self):
        return code_issues(self.model_dump(include={"categories", "custom_categories", "excluded_categories",
                                                    "streaming", "default_categories"}))

    # ----------------------------------------------------------------------- derived views

    @property
    def known_codes(self) -> set[str]:
        return set(HAZARD_CODES) | set(self.custom_categories)

    @property
    def shadow(self) -> bool:
        return self.mode == "shadow"

    def rule(self, code: str, direction: Direction) -> EffectiveRule | None:
        """The rule that judges ``code`` in ``direction``; None for excluded categories."""
        if code in self.excluded_categories:
            return None
        return self.categories.get(code, self.other_categories).for_direction(direction)

    def canonical_json(self) -> str:
        """The resolved policy as canonical JSON (sorted keys, no spaces): what the hash covers."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)

    @cached_property
    def content_hash(self) -> str:
        """sha256 (hex) of ``canonical_json()``: stable across key order, comments and formatting."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Policy:
        copy = super().model_copy(update=update, deep=deep)
        for cached in ("content_hash", "ref"):  # they belong to the original
            copy.__dict__.pop(cached, None)
        return copy

    @cached_property
    def ref(self) -> PolicyRef:
        """Made once per policy (frozen, so every decision may share it)."""
        return PolicyRef(id=self.id, version=self.version, hash=self.content_hash)
