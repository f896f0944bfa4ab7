"""Which guard requests a policy asks for, for one direction of one conversation (pure).

Llama Guard sees a window of the conversation (``context``): the current turn plus
``context.turns`` past turns, where a turn starts at a ``user`` message, keeping only the roles in
``context.roles``.

* ``input``: the window ends at the last ``user`` message, so the judged role is the user's
  (trailing assistant messages are judged on their own, see ``context.judge`` below; trailing tool
  results sit on the Agent side of the prompt and are Prompt Guard's to judge). No user message in
  the window = no main Llama Guard request.
* ``output``: the conversation must end with the assistant reply being judged; the window ends
  there (the reply is always included, whatever ``context.roles`` says).

Prompt Guard scans input messages one by one, each with its source:

* a message whose ``name`` matches ``prompt_injection.document_names`` (fnmatch; default
  ``document`` and ``document:*``) is retrieved context, source ``document``, whatever its role
  (e.g. ``{"role": "system", "name": "document:kb-42", "content": "..."}``);
* otherwise role ``user`` -> source ``user``, role ``tool`` -> source ``tool``; assistant messages
  are not scanned, nor are system messages the policy trusts (``judged_text.system: trusted``; by
  default they are user text, see below);
* only sources with at least one threshold set are scanned, and only within
  ``prompt_injection.scope`` (``all`` messages, the Llama Guard ``window``, or the ``latest_turn``).

Both guards judge the policy's copy of the conversation (``guard.policy.judged``: normalised text,
neutralised template markers, caller-written system messages as user text), never the caller's
text itself. Beside the main Llama Guard request, the plan lists extra judgements
(``llama_guard_extra``, all sent in the same executor call):

* for ``input``, every other turn ``context.judge`` names (``all``: every user and assistant turn;
  ``user``: every user turn; ``latest``: none), each as the last turn of the window the policy
  would give it were it the latest: the history of a stateless request is the caller's text too;
* the readings (``judged_text.readings``) of every message a judgement judges (the latest turn's,
  and those of the other judged turns): marker pieces, decoded blobs, joins, each alone;

and Prompt Guard scans the readings of each scanned message (decoded blobs, joins) beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field

from guard.errors import BadInput
from guard.policy.judged import JudgedCopy, judged_copy, llama_guard_text, readings
from guard.policy.schema import GuardName, Policy
from guard.taxonomy import HAZARD_CODES, HAZARDS, default_categories
from guard.types import (
    SCHEMA_VERSION,
    Direction,
    LlamaGuardRequest,
    LlamaGuardResult,
    Message,
    MessageSource,
    PromptGuardRequest,
    PromptGuardResult,
)


class PlannedScan(BaseModel):
    """One Prompt Guard request and the index of the message it scans (``reading``: what of it,
    when not its text itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_index: int
    request: PromptGuardRequest
    reading: str | None = None


class PlannedJudgement(BaseModel):
    """An extra Llama Guard request: the message it judges, the messages it shows (``messages``,
    empty for a reading), and what it judges (``reading``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_index: int
    messages: list[int] = Field(default_factory=list)
    reading: str
    request: LlamaGuardRequest


class CheckPlan(BaseModel):
    """What to run for one direction. ``run_checks`` runs it and returns ``GuardResults`` with the
    Prompt Guard results in plan order (``with_indices`` stamps each with its message index)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = SCHEMA_VERSION
    direction: Direction
    llama_guard: LlamaGuardRequest | None = None
    # Indices (into the checked conversation) of the messages sent to Llama Guard, in order.
    llama_guard_messages: list[int] = Field(default_factory=list)
    # Earlier turns and readings, judged beside the main request (see the module docstring).
    llama_guard_extra: list[PlannedJudgement] = Field(default_factory=list)
    prompt_guard: list[PlannedScan] = Field(default_factory=list)
    # Seconds per guard, from the policy's `guards.<name>.timeout_ms`.
    timeouts: dict[GuardName, float] = Field(default_factory=dict)
    # Model per guard as the policy names it (None = the process default).
    models: dict[GuardName, str | None] = Field(default_factory=dict)

    @property
    def prompt_guard_requests(self) -> list[PromptGuardRequest]:
        return [scan.request for scan in self.prompt_guard]

    @property
    def llama_guard_requests(self) -> list[LlamaGuardRequest]:
        """The main request (when there is one), then the extra ones: one executor call."""
        main = [self.llama_guard] if self.llama_guard is not None else []
        return main + [extra.request for extra in self.llama_guard_extra]

    @property
    def empty(self) -> bool:
        return self.llama_guard is None and not self.llama_guard_extra and not self.prompt_guard

    def with_indices(self, results: Sequence[PromptGuardResult]) -> list[PromptGuardResult]:
        """Stamp Prompt Guard results (in plan order) with the index of the message each scanned."""
        if len(results) != len(self.prompt_guard):
            raise ValueError(f"{len(results)} Prompt Guard results for {len(self.prompt_guard)} planned scans")
        return [r.model_copy(update={"message_index": s.message_index, "reading": s.reading})
                for r, s in zip(results, self.prompt_guard)]

    def llama_guard_results(
        self, results: Sequence[LlamaGuardResult]
    ) -> tuple[LlamaGuardResult | None, list[LlamaGuardResult]]:
        """Llama Guard results in ``llama_guard_requests`` order -> (main result, extra results
        stamped with the message and reading each judged)."""
        main = 1 if self.llama_guard is not None else 0
        if len(results) != main + len(self.llama_guard_extra):
            raise ValueError(f"{len(results)} Llama Guard results for {main + len(self.llama_guard_extra)} requests")
        extra = [r.model_copy(update={"message_index": j.message_index, "reading": j.reading})
                 for r, j in zip(results[main:], self.llama_guard_extra)]
        return (results[0] if main else None), extra


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
    judged = judged_copy(policy, messages)
    conversation = judged.messages
    start = window_start(conversation, policy.context.turns)
    lg_on = lg_settings.applies(direction)
    latest, others = judged_turns(policy, conversation, direction) if lg_on else ([], [])
    lg_judged = {i for turn in (latest, *others) for i in turn}
    scanned = _scanned_sources(policy, judged, start) if pg_settings.applies(direction) else {}
    found = readings(policy, judged, sorted(lg_judged | set(scanned)))
    lg_request, lg_indices, extra = None, [], []
    if lg_on:
        categories, excluded = llama_guard_categories(policy, family or lg_settings.family)

        def request(shown: Sequence[Message]) -> LlamaGuardRequest:
            return LlamaGuardRequest(conversation=list(shown), categories=categories, excluded=excluded,
                                     overflow=policy.context.overflow)

        lg_indices = _llama_guard_window(policy, conversation, direction, start)
        if lg_indices:
            lg_request = request([conversation[i] for i in lg_indices])
        extra = _turn_judgements(policy, conversation, others, request) + [
            PlannedJudgement(message_index=r.message_index, reading=r.why,
                             request=request([Message(role=r.role, content=llama_guard_text(policy, r.text))]))
            for r in found if r.message_index in lg_judged]
    scans = [PlannedScan(message_index=i, request=PromptGuardRequest(text=judged.normalized[i], source=source))
             for i, source in scanned.items()]
    scans += [PlannedScan(message_index=r.message_index, reading=r.why,
                          request=PromptGuardRequest(text=r.text, source=scanned[r.message_index]))
              for r in found if r.message_index in scanned and not r.llama_guard_only]
    return CheckPlan(
        direction=direction,
        llama_guard=lg_request,
        llama_guard_messages=lg_indices if lg_request else [],
        llama_guard_extra=extra,
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


def _turn_judgements(
    policy: Policy, conversation: Sequence[Message], turns: Sequence[Sequence[int]],
    request: Callable[[Sequence[Message]], LlamaGuardRequest],
) -> list[PlannedJudgement]:
    """One Llama Guard request per turn (other than the latest), each as the last turn of the
    window the policy would give it were it the latest."""
    out: list[PlannedJudgement] = []
    for turn in turns:
        end = turn[-1]
        prefix = conversation[: end + 1]
        side: Direction = "input" if conversation[end].role == "user" else "output"
        shown = _llama_guard_window(policy, prefix, side, window_start(prefix, policy.context.turns))
        what = "user turn" if side == "input" else "assistant turn"
        out.append(PlannedJudgement(message_index=end, messages=shown, reading=what,
                                    request=request([conversation[i] for i in shown])))
    return out


def judged_turns(
    policy: Policy, messages: Sequence[Message], direction: Direction
) -> tuple[list[int], list[list[int]]]:
    """The turns Llama Guard judges, as message indices: (the latest, the others). The latest is,
    for ``input``, the one ending at the last user message (none without a user message), for
    ``output`` the reply; the others (``input`` only) are those ``context.judge`` names, in order.
    A turn is a run of messages of one side (user; assistant and tool) among the roles Llama Guard
    sees (``context.roles``)."""
    shown = [i for i, m in enumerate(messages) if m.role in policy.context.roles]
    runs: list[list[int]] = []
    for i in shown:
        if runs and (messages[runs[-1][-1]].role == "user") == (messages[i].role == "user"):
            runs[-1].append(i)
        else:
            runs.append([i])
    if direction == "output":  # the reply, even when Llama Guard sees no other assistant message
        last = len(messages) - 1
        return (runs[-1] if runs and runs[-1][-1] == last else [last]), []
    users = [run for run in runs if messages[run[0]].role == "user"]
    latest = users[-1] if users else []
    if policy.context.judge == "latest":
        return latest, []
    return latest, [run for run in (runs if policy.context.judge == "all" else users) if run != latest]


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


def _scanned_sources(policy: Policy, judged: JudgedCopy, window: int) -> dict[int, MessageSource]:
    """Index -> source of every message Prompt Guard scans, in order."""
    pi, messages = policy.prompt_injection, judged.messages
    if pi.scope == "all":
        first = 0
    elif pi.scope == "window":
        first = window
    else:
        first = window_start(messages, 0)
    scanned: dict[int, MessageSource] = {}
    for index in range(first, len(messages)):
        source = message_source(policy, messages[index])
        if source is not None and pi.source(source).scanned and judged.normalized[index].strip():
            scanned[index] = source
    return scanned
