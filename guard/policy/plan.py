"""Which guard requests a policy asks for, for one direction of one conversation (pure).

Llama Guard sees a window of the conversation (``context``): the current turn plus
``context.turns`` past turns, where a turn starts at a ``user`` message, keeping only the roles in
``context.roles``.

* ``input``: the window ends at the last ``user`` message, so the judged role is the user's
  (trailing assistant messages were judged as output before; trailing tool results sit on the
  Agent side of the prompt and are Prompt Guard's to judge). No user message in the window = no
  Llama Guard request.
* ``output``: the conversation must end with the assistant reply being judged; the window ends
  there (the reply is always included, whatever ``context.roles`` says).

Prompt Guard scans input messages one by one, each with its source:

* a message whose ``name`` matches ``prompt_injection.document_names`` (fnmatch; default
  ``document`` and ``document:*``) is retrieved context, source ``document``, whatever its role
  (e.g. ``{"role": "system", "name": "document:kb-42", "content": "..."}``);
* otherwise role ``user`` -> source ``user``, role ``tool`` -> source ``tool``; system and
  assistant messages are not scanned;
* only sources with at least one threshold set are scanned, and only within
  ``prompt_injection.scope`` (``all`` messages, the Llama Guard ``window``, or the ``latest_turn``).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from guard.errors import BadInput
from guard.policy.schema import GuardName, Policy
from guard.taxonomy import HAZARD_CODES, HAZARDS, default_categories
from guard.types import (
    SCHEMA_VERSION,
    Direction,
    LlamaGuardRequest,
    Message,
    MessageSource,
    PromptGuardRequest,
    PromptGuardResult,
)


class PlannedScan(BaseModel):
    """One Prompt Guard request and the index of the message it scans."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_index: int
    request: PromptGuardRequest


class CheckPlan(BaseModel):
    """What to run for one direction. ``run_checks`` runs it and returns ``GuardResults`` with the
    Prompt Guard results in plan order (``with_indices`` stamps each with its message index)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    direction: Direction
    llama_guard: LlamaGuardRequest | None = None
    # Indices (into the checked conversation) of the messages sent to Llama Guard, in order.
    llama_guard_messages: list[int] = Field(default_factory=list)
    prompt_guard: list[PlannedScan] = Field(default_factory=list)
    # Seconds per guard, from the policy's `guards.<name>.timeout_ms`.
    timeouts: dict[GuardName, float] = Field(default_factory=dict)
    # Model per guard as the policy names it (None = the process default).
    models: dict[GuardName, str | None] = Field(default_factory=dict)

    @property
    def prompt_guard_requests(self) -> list[PromptGuardRequest]:
        return [scan.request for scan in self.prompt_guard]

    @property
    def empty(self) -> bool:
        return self.llama_guard is None and not self.prompt_guard

    def with_indices(self, results: Sequence[PromptGuardResult]) -> list[PromptGuardResult]:
        """Stamp Prompt Guard results (in plan order) with the index of the message each scanned."""
        if len(results) != len(self.prompt_guard):
            raise ValueError(f"{len(results)} Prompt Guard results for {len(self.prompt_guard)} planned scans")
        return [r.model_copy(update={"message_index": s.message_index}) for r, s in zip(results, self.prompt_guard)]


def plan_checks(
    policy: Policy, messages: Sequence[Message], direction: Direction, *, family: str | None = None
) -> CheckPlan:
    """The checks ``policy`` asks for on ``messages`` in ``direction``.

    ``family`` (the Llama Guard prompt family of the runner, else ``guards.llama_guard.family``) is
    only needed to list the model's default categories beside custom ones and to drop exclusions
    the model does not know."""
    if not messages:
        raise BadInput("the conversation is empty", param="messages")
    if direction == "output" and messages[-1].role != "assistant":
        raise BadInput("an output check needs the assistant reply as the last message", param="messages")
    lg_settings, pg_settings = policy.guards.llama_guard, policy.guards.prompt_guard
    start = window_start(messages, policy.context.turns)
    lg_request, lg_indices = None, []
    if lg_settings.applies(direction):
        lg_indices = _llama_guard_window(policy, messages, direction, start)
        if lg_indices:
            categories, excluded = llama_guard_categories(policy, family or lg_settings.family)
            lg_request = LlamaGuardRequest(conversation=[messages[i] for i in lg_indices],
                                           categories=categories, excluded=excluded)
    scans = _prompt_guard_scans(policy, messages, start) if pg_settings.applies(direction) else []
    return CheckPlan(
        direction=direction,
        llama_guard=lg_request,
        llama_guard_messages=lg_indices if lg_request else [],
        prompt_guard=scans,
        timeouts={"llama_guard": lg_settings.timeout_ms / 1000, "prompt_guard": pg_settings.timeout_ms / 1000},
        models={"llama_guard": lg_settings.model, "prompt_guard": pg_settings.model},
    )


def window_start(messages: Sequence[Message], turns: int | None) -> int:
    """Index where the context window starts: the user message ``turns`` user turns before the
    last one (0 when there are fewer turns, or when ``turns`` is None = everything)."""
    if turns is None:
        return 0
    user_indices = [i for i, m in enumerate(messages) if m.role == "user"]
    return user_indices[-(turns + 1)] if len(user_indices) > turns else 0


def _llama_guard_window(policy: Policy, messages: Sequence[Message], direction: Direction, start: int) -> list[int]:
    roles = set(policy.context.roles)
    last = len(messages) - 1
    indices = [i for i in range(start, len(messages)) if messages[i].role in roles]
    if direction == "output":
        if not indices or indices[-1] != last:
            indices.append(last)
        return indices
    while indices and messages[indices[-1]].role != "user":
        indices.pop()
    return indices


def llama_guard_categories(policy: Policy, family: str | None) -> tuple[dict[str, str] | None, list[str]]:
    """(categories, excluded) for the Llama Guard request. ``None`` categories = the model's own
    list; with custom categories the full list is spelled out (custom ones replace the list)."""
    excluded = list(policy.excluded_categories)
    base: dict[str, str] | None = default_categories(family) if family else None
    if not policy.custom_categories:
        return None, [c for c in excluded if c in base] if base is not None else excluded
    if not policy.default_categories:
        base = {}
    elif base is None:
        base = {code: HAZARDS[code].name + "." for code in HAZARD_CODES}
    categories = {**base, **{code: cat.prompt_text() for code, cat in policy.custom_categories.items()}}
    return categories, [c for c in excluded if c in categories]


def message_source(policy: Policy, message: Message) -> MessageSource | None:
    """Where a message's text came from, for Prompt Guard (None = not scanned)."""
    if message.name and any(fnmatchcase(message.name, pat) for pat in policy.prompt_injection.document_names):
        return "document"
    if message.role == "user":
        return "user"
    if message.role == "tool":
        return "tool"
    return None


def _prompt_guard_scans(policy: Policy, messages: Sequence[Message], window: int) -> list[PlannedScan]:
    pi = policy.prompt_injection
    if pi.scope == "all":
        first = 0
    elif pi.scope == "window":
        first = window
    else:
        first = window_start(messages, 0)
    scans = []
    for index in range(first, len(messages)):
        message = messages[index]
        source = message_source(policy, message)
        if source is None or not pi.source(source).scanned or not message.text.strip():
            continue
        scans.append(PlannedScan(message_index=index, request=PromptGuardRequest(text=message.text, source=source)))
    return scans
