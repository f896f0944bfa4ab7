"""Shared types that cross room boundaries: messages, guard results, decisions, audit records.

Every model here may cross a process boundary (Celery, HTTP, audit store), so each carries a
``schema_version`` and is a pydantic model. One definition each: other modules import from here.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1

Role = Literal["system", "user", "assistant", "tool"]
Direction = Literal["input", "output"]
GuardStatus = Literal["ok", "guard_error", "timeout", "not_scanned"]
# Where a text scanned by Prompt Guard came from: the user, a tool result, or retrieved context.
MessageSource = Literal["user", "tool", "document"]
# What Llama Guard does with a conversation longer than its model reads: judge it in pieces that
# each fit, or refuse it (``ContextOverflow``). Never truncate.
Overflow = Literal["split", "refuse"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- messages


class TextPart(_Strict):
    type: Literal["text"] = "text"
    text: str


class Message(_Strict):
    """One OpenAI-style chat message, normalised at the edge (see ``guard.messages``).

    ``content`` is either a string or a list of text parts; ``text`` gives the parts joined with
    newlines for code that needs one string.
    """

    role: Role
    content: str | list[TextPart]
    name: str | None = None

    @property
    def parts(self) -> list[str]:
        if isinstance(self.content, str):
            return [self.content]
        return [p.text for p in self.content]

    @property
    def text(self) -> str:
        return "\n".join(self.parts)


Conversation = list[Message]


# --------------------------------------------------------------------------- guard requests


class LlamaGuardRequest(_Strict):
    """A conversation to classify. The judged role follows from the last message (user -> User,
    assistant -> Agent). ``categories`` replaces the family's default list (code -> prompt text);
    ``excluded`` drops codes without renumbering. ``overflow`` is what to do when the prompt is
    longer than the model reads (see ``guard.models.llama_guard.split``)."""

    schema_version: int = SCHEMA_VERSION
    conversation: list[Message]
    categories: dict[str, str] | None = None
    excluded: list[str] = Field(default_factory=list)
    decode: bool = False
    overflow: Overflow = "split"


class PromptGuardRequest(_Strict):
    schema_version: int = SCHEMA_VERSION
    text: str
    source: MessageSource = "user"


# --------------------------------------------------------------------------- guard results


class ModelInfo(_Strict):
    """Which model produced a result: id as configured (hub id or path) and resolved revision."""

    model: str
    revision: str | None = None
    family: str
    device: str = "cpu"
    dtype: str = "float32"


class LlamaGuardResult(_Strict):
    schema_version: int = SCHEMA_VERSION
    model: ModelInfo
    # Full-vocabulary softmax P("unsafe") at the verdict position.
    unsafe_score: float
    # P(unsafe) / (P(safe) + P(unsafe)) at the same position, reported beside it.
    unsafe_score_pair: float
    # Codes the greedy output lists ([] when safe); None when no decode was run (verdict safe,
    # decode not requested) -- then the categories are inferred from category_scores only.
    categories: list[str] = Field(default_factory=list)
    category_scores: dict[str, float] = Field(default_factory=dict)
    # Raw generated text, stripped; None when the decode was skipped.
    output: str | None = None
    latency_ms: float = 0.0
    # Answered from the judgement cache (``guard.executor.cache``): the same request's earlier
    # result, every other field equal, latency_ms 0 (no model time was spent on this request).
    cached: bool = False
    # How many pieces the conversation was judged in (1 = whole; more when it was longer than the
    # model reads). Split results combine the pieces: the unsafe score, its pair and the output are
    # those of the worst piece (``piece``, 0-based), category scores the maximum over the pieces,
    # categories the union; ``split`` says how the conversation was cut.
    pieces: int = 1
    piece: int | None = None
    split: str | None = None
    # For an extra judgement of a plan (``CheckPlan.llama_guard_extra``: an earlier turn, a reading
    # of a message's text), set by the checks from the plan: the index of the judged message in the
    # checked conversation and what was judged. None for the main judgement of the conversation.
    message_index: int | None = None
    reading: str | None = None


class PromptGuardResult(_Strict):
    schema_version: int = SCHEMA_VERSION
    model: ModelInfo
    jailbreak_score: float
    # PG1: p[INJECTION] + p[JAILBREAK]; PG2: p[MALICIOUS] (same as jailbreak_score).
    injection_score: float
    # The segment with the highest score, its index and how many segments were scanned.
    segment: str | None = None
    segment_index: int = 0
    segments: int = 1
    source: MessageSource = "user"
    latency_ms: float = 0.0
    # Answered from the judgement cache, as ``LlamaGuardResult.cached``.
    cached: bool = False
    # Index of the scanned message in the checked conversation (set by the checks from the plan;
    # the runner does not know it). Lets a decision name the message that crossed.
    message_index: int | None = None
    # What was scanned when it was not the message's text itself (a reading: "decoded base64", ...).
    reading: str | None = None


# --------------------------------------------------------------------------- decisions


class Action(str, enum.Enum):
    ALLOW = "allow"
    FLAG = "flag"
    REDACT = "redact"
    ESCALATE = "escalate"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @classmethod
    def most_severe(cls, actions: list[Action]) -> Action:
        return max(actions, key=lambda a: a.severity, default=cls.ALLOW)


_SEVERITY = {Action.ALLOW: 0, Action.FLAG: 1, Action.REDACT: 2, Action.ESCALATE: 3, Action.BLOCK: 4}

ReasonKind = Literal["category", "jailbreak", "injection", "guard_error"]


class Reason(_Strict):
    """One thing that crossed its threshold (or a guard that failed)."""

    kind: ReasonKind
    action: Action
    code: str | None = None  # hazard code for kind == "category"
    score: float | None = None
    threshold: float | None = None
    source: MessageSource | None = None
    message_index: int | None = None
    detail: str | None = None
    message: str | None = None  # text shown to the end user, from the policy


class PolicyRef(_Strict):
    id: str
    version: str
    hash: str


class Decision(_Strict):
    schema_version: int = SCHEMA_VERSION
    action: Action
    # What the caller must do: equals ``action`` unless the policy is in shadow mode (then allow).
    effective_action: Action
    direction: Direction
    reasons: list[Reason] = Field(default_factory=list)
    policy: PolicyRef
    shadow: bool = False
    guard_status: GuardStatus = "ok"
    user_message: str | None = None


class GuardResults(_Strict):
    """Everything the checks produced for one direction of one request."""

    schema_version: int = SCHEMA_VERSION
    llama_guard: LlamaGuardResult | None = None
    # Llama Guard's extra judgements (earlier turns, readings), each naming its message and reading.
    llama_guard_extra: list[LlamaGuardResult] = Field(default_factory=list)
    prompt_guard: list[PromptGuardResult] = Field(default_factory=list)
    # Typed failures, by guard name ("llama_guard", "prompt_guard"): the error kind and message.
    errors: dict[str, str] = Field(default_factory=dict)
    timeouts: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- audit


RetentionMode = Literal["full", "redacted", "none"]
AuditDirection = Literal["input", "output", "stream_window", "review", "moderation"]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ModerationAnswer(_Strict):
    """What ``/v1/moderations`` answered for one input (the ``moderation`` field of its record):
    OpenAI's keys it set and their scores, through the mapping file of ``mapping_version``, and the
    policy's ``on_error`` when Llama Guard failed on the input (then ``flagged`` follows it)."""

    input_index: int
    flagged: bool
    categories: list[str] = Field(default_factory=list)
    category_scores: dict[str, float] = Field(default_factory=dict)
    mapping_version: str
    on_error: Action | None = None


class AuditRecord(BaseModel):
    """One decision as stored in the audit log; also the JSONL line `guard policy replay` reads."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    id: str
    time: Annotated[datetime, Field(default_factory=_utcnow)]
    request_id: str
    tenant: str = "default"
    api_key_id: str | None = None
    route: str = ""
    direction: AuditDirection
    window_index: int | None = None
    policy: PolicyRef
    results: GuardResults
    decision: Decision
    guard_status: GuardStatus = "ok"
    latency_ms: dict[str, float] = Field(default_factory=dict)
    content_sha256: str
    retention: RetentionMode = "full"
    content: str | None = None
    # Link to an earlier record (a review decision points at the escalated record).
    ref_id: str | None = None
    review: dict[str, Any] | None = None
    # A ``/v1/moderations`` input's record (direction ``moderation``): what the caller was told.
    moderation: ModerationAnswer | None = None
    prev_hash: str | None = None
    hash: str | None = None

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
