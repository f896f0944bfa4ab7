"""What crosses the Celery boundary: task names, queues, call and reply payloads, worker status.

Every payload is a versioned pydantic model, sent as JSON (``model_dump(mode="json")``) and
validated on arrival (``model_validate``). A task never raises for a guard failure: it answers with
an ``ErrorInfo`` carrying the ``GuardError`` kind, which the client turns back into the same typed
error (``error_from_info``). Errors are per request, so one bad request in a task (a client
sends the requests of concurrent calls together) fails only its own caller.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from guard import errors
from guard.types import (
    SCHEMA_VERSION,
    LlamaGuardRequest,
    LlamaGuardResult,
    ModelInfo,
    PromptGuardRequest,
    PromptGuardResult,
)

Kind = Literal["llama_guard", "prompt_guard"]
KINDS: tuple[Kind, ...] = ("llama_guard", "prompt_guard")

#: Queue per model kind (the queue name equals the kind).
QUEUES: dict[Kind, str] = {"llama_guard": "llama_guard", "prompt_guard": "prompt_guard"}
#: Task name per model kind.
TASKS: dict[Kind, str] = {"llama_guard": "guard.llama_guard", "prompt_guard": "guard.prompt_guard"}
PING_TASK = "guard.ping"
#: Remote-control command every worker answers with its ``WorkerStatus`` list (``guard status``).
STATUS_COMMAND = "guard_status"
#: Result channels of guard clients start with this: the worker publishes a task's result on its
#: ``reply_to`` channel when it is one (``workers/backend.py``), so a client subscribes only once.
REPLY_CHANNEL_PREFIX = "guard.replies."

Req = TypeVar("Req", LlamaGuardRequest, PromptGuardRequest)
Res = TypeVar("Res", LlamaGuardResult, PromptGuardResult)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION


class ErrorInfo(_Wire):
    kind: str
    message: str


class Call(_Wire, Generic[Req]):
    """Arguments of a model task: the requests and how long the caller will wait for them."""

    requests: list[Req]
    timeout_s: float = Field(gt=0)


class Outcome(_Wire, Generic[Res]):
    """One request's answer: its result, or the error that failed it."""

    result: Res | None = None
    error: ErrorInfo | None = None


class Reply(_Wire, Generic[Res]):
    """A model task's answer: one outcome per request, in order, or ``error`` for the whole call
    (a payload the worker could not read)."""

    outcomes: list[Outcome[Res]] = Field(default_factory=list)
    error: ErrorInfo | None = None


class LlamaGuardCall(Call[LlamaGuardRequest]):
    pass


class PromptGuardCall(Call[PromptGuardRequest]):
    pass


class LlamaGuardReply(Reply[LlamaGuardResult]):
    pass


class PromptGuardReply(Reply[PromptGuardResult]):
    pass


CALLS: dict[Kind, type[Call]] = {  # type: ignore[type-arg]
    "llama_guard": LlamaGuardCall, "prompt_guard": PromptGuardCall}
REPLIES: dict[Kind, type[Reply]] = {  # type: ignore[type-arg]
    "llama_guard": LlamaGuardReply, "prompt_guard": PromptGuardReply}


class BatchCounters(_Wire):
    batches: int = 0
    items: int = 0
    max_batch: int = 0
    errors: int = 0


class WorkerStatus(_Wire):
    """One model served by one worker (or by the in-process executor)."""

    worker: str
    queue: Kind
    loaded: bool
    loading: bool = False
    model: ModelInfo | None = None
    #: The configured model string ("" = the demo model), known before the load finishes.
    configured_model: str = ""
    error: str | None = None
    pid: int | None = None
    concurrency: int | None = None
    batching: BatchCounters = Field(default_factory=BatchCounters)


def error_info(error: BaseException) -> ErrorInfo:
    if isinstance(error, errors.GuardError):
        return ErrorInfo(kind=error.kind, message=error.message)
    return ErrorInfo(kind=errors.ModelUnavailable.kind, message=f"{type(error).__name__}: {error}")


def _error_classes() -> dict[str, type[errors.GuardError]]:
    found: dict[str, type[errors.GuardError]] = {}
    pending: list[type[errors.GuardError]] = [errors.GuardError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.kind, cls)
        pending.extend(cls.__subclasses__())
    return found


def error_from_info(info: ErrorInfo) -> errors.GuardError:
    """The typed error a worker reported (``ModelUnavailable`` for kinds this side does not know)."""
    cls = _error_classes().get(info.kind, errors.ModelUnavailable)
    if cls is errors.GuardError:
        cls = errors.ModelUnavailable
    return cls(info.message)
