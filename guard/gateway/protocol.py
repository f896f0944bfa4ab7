"""OpenAI-compatible request and response models (the subset the gateway reads or writes).

The OpenAI API allows extra fields, so every payload model keeps them (``extra="allow"``): a client
may send parameters the gateway does not know, and they are forwarded to the upstream untouched.
Native guard payloads (``/v1/guard/check``) forbid extra fields instead.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from guard.types import Decision, Direction, GuardResults, PolicyRef


class OpenAIBaseModel(BaseModel):
    # The OpenAI API does allow extra fields.
    model_config = ConfigDict(extra="allow")


# --------------------------------------------------------------------------- errors


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(OpenAIBaseModel):
    error: ErrorInfo


# --------------------------------------------------------------------------- chat completions


class ChatCompletionRequest(OpenAIBaseModel):
    """Only what the gateway needs is typed; messages are normalised by ``guard.messages``."""

    model: str = Field(min_length=1)
    messages: list[Any]
    stream: bool = False


class ChatMessageOut(OpenAIBaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(OpenAIBaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str | None = "stop"
    logprobs: Any | None = None


class Usage(OpenAIBaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletion(OpenAIBaseModel):
    id: str = Field(default_factory=new_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class DeltaMessage(OpenAIBaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(OpenAIBaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: Any | None = None


class ChatCompletionChunk(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice]


# --------------------------------------------------------------------------- moderations


class TextInputPart(OpenAIBaseModel):
    type: Literal["text"]
    text: str


class ModerationRequest(OpenAIBaseModel):
    input: str | list[str] | list[TextInputPart]
    model: str | None = None


class ModerationResult(OpenAIBaseModel):
    """OpenAI's result plus guard extras: native S-codes, their scores and Prompt Guard scores."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    guard: dict[str, Any] = Field(default_factory=dict)


class ModerationResponse(OpenAIBaseModel):
    id: str = Field(default_factory=lambda: f"modr-{uuid.uuid4().hex}")
    model: str
    results: list[ModerationResult]


# --------------------------------------------------------------------------- models


class ModelCard(OpenAIBaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "guard"


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --------------------------------------------------------------------------- native guard API


class GuardCheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Any]
    direction: Direction = "input"
    policy: str | None = None


class GuardCheckResponse(BaseModel):
    request_id: str
    policy: PolicyRef
    direction: Direction
    decision: Decision
    results: GuardResults
    check_ms: float
