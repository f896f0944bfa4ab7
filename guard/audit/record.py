"""Build the audit record of one decision, applying the policy's retention mode.

Content format: a conversation is stored as the canonical JSON array of its messages
(``Message.model_dump``), a plain string (model output, a stream window) as itself.
``content_sha256`` is always the SHA-256 of that full, unredacted text.

Retention modes:

* ``full``: the content as received.
* ``redacted``: every flagged message is replaced by a marker naming why, e.g. ``[redacted:S9]`` or
  ``[redacted:jailbreak]``. A message is flagged by a reason that names it (``message_index``) and
  by the categories an extra Llama Guard judgement of it reported (an earlier turn, a reading); a
  reason without an index (Llama Guard judges the whole conversation) and any category Llama Guard's
  main judgement reported flag every message of the judged side (system, user and tool messages
  for input, the assistant text for output and stream windows). Prompt Guard's highest-scoring segment is kept only when it
  is part of a message that was kept; free text (error messages, reason details) that quotes a
  redacted message is replaced.
* ``none``: no content, no Prompt Guard segment, Llama Guard's raw output only when it is a bare
  verdict (``safe`` / ``unsafe`` + codes), and error messages or reason details that quote any part
  of the content (12 characters or more, or a whole short message) reduced to their kind.

Scores, categories, actions and codes are never touched, so ``guard policy replay`` reproduces the
decision under every mode.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from guard.audit.chain import canonical_json, content_sha256
from guard.types import (
    Action,
    AuditDirection,
    AuditRecord,
    Decision,
    GuardResults,
    GuardStatus,
    LlamaGuardResult,
    Message,
    Reason,
    RetentionMode,
)

Content = Sequence[Message] | str | None

_VERDICT = re.compile(r"\A(safe|unsafe(\s*\n\s*S\d+(\s*,\s*S\d+)*)?)\Z")
_GRAM = 12  # a quote of this many characters counts as a leak
_REDACTED = "[redacted]"


def new_record_id() -> str:
    return uuid.uuid4().hex


def build_record(
    *,
    request_id: str,
    direction: AuditDirection,
    results: GuardResults,
    decision: Decision,
    content: Content,
    retention: RetentionMode = "full",
    tenant: str = "default",
    api_key_id: str | None = None,
    route: str = "",
    window_index: int | None = None,
    latency_ms: Mapping[str, float] | None = None,
    record_id: str | None = None,
    time: datetime | None = None,
) -> AuditRecord:
    """The audit record of one decision (not yet chained: the store sets ``prev_hash``/``hash``)."""
    texts = _message_texts(content)
    full_text = serialize_content(content)
    flagged = _flagged_indexes(decision, results, content)
    kept_texts = [t for i, t in enumerate(texts) if i not in flagged]
    hidden = texts if retention == "none" else [t for i, t in enumerate(texts) if i in flagged]
    stored_results, stored_decision = _scrub_results(results, decision, retention, hidden, kept_texts)
    extra = {"time": time} if time is not None else {}
    return AuditRecord(
        id=record_id or new_record_id(),
        request_id=request_id,
        tenant=tenant,
        api_key_id=api_key_id,
        route=route,
        direction=direction,
        window_index=window_index,
        policy=decision.policy,
        results=stored_results,
        decision=stored_decision,
        guard_status=guard_status_of(results, decision),
        latency_ms=_latencies(results, latency_ms),
        content_sha256=content_sha256(full_text),
        retention=retention,
        content=_retained_content(content, full_text, retention, flagged, decision, results),
        **extra,
    )


def serialize_content(content: Content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return canonical_json([m.model_dump(mode="json", exclude_none=True) for m in content])


def guard_status_of(results: GuardResults, decision: Decision) -> GuardStatus:
    """The decision's status, except that a decision claiming ``ok`` when no guard produced
    anything is recorded as ``not_scanned``: unscanned text is never recorded as passed."""
    if decision.guard_status != "ok":
        return decision.guard_status
    if results.timeouts:
        return "timeout"
    if results.errors:
        return "guard_error"
    if results.llama_guard is None and not results.prompt_guard:
        return "not_scanned"
    return "ok"


# --------------------------------------------------------------------------- content


def _message_texts(content: Content) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    return [m.text for m in content]


def _judged_roles(direction: str) -> tuple[str, ...]:
    # System messages too: a policy judges caller-written ones as user text by default
    # (``judged_text.system``), and the record does not know which policy trusted them.
    return ("system", "user", "tool") if direction == "input" else ("assistant",)


def _flag_labels(decision: Decision, results: GuardResults, content: Content) -> dict[int, list[str]]:
    """Message index -> why it is flagged (codes or reason kinds)."""
    labels: dict[int, list[str]] = {}
    count = len(_message_texts(content))
    whole: list[str] = []
    for reason in decision.reasons:
        if reason.kind == "guard_error":
            continue
        label = reason.code or reason.kind
        if reason.message_index is not None and 0 <= reason.message_index < count:
            labels.setdefault(reason.message_index, []).append(label)
        else:
            whole.append(label)
    if results.llama_guard is not None:
        whole.extend(results.llama_guard.categories)
    for extra in results.llama_guard_extra:
        if extra.message_index is not None and 0 <= extra.message_index < count and extra.categories:
            labels.setdefault(extra.message_index, []).extend(extra.categories)
    if whole:
        for index in _judged_indexes(content, decision.direction):
            labels.setdefault(index, []).extend(whole)
    return labels


def _judged_indexes(content: Content, direction: str) -> list[int]:
    if content is None:
        return []
    if isinstance(content, str):
        return [0]
    roles = _judged_roles(direction)
    return [i for i, m in enumerate(content) if m.role in roles]


def _flagged_indexes(decision: Decision, results: GuardResults, content: Content) -> set[int]:
    return set(_flag_labels(decision, results, content))


def _marker(labels: Iterable[str]) -> str:
    return f"[redacted:{','.join(sorted(set(labels)))}]"


def _retained_content(
    content: Content,
    full_text: str,
    retention: RetentionMode,
    flagged: set[int],
    decision: Decision,
    results: GuardResults,
) -> str | None:
    if retention == "none" or content is None:
        return None
    if retention == "full" or not flagged:
        return full_text
    labels = _flag_labels(decision, results, content)
    if isinstance(content, str):
        return _marker(labels[0])
    messages = [
        m.model_copy(update={"content": _marker(labels[i])}) if i in labels else m
        for i, m in enumerate(content)
    ]
    return serialize_content(messages)


# --------------------------------------------------------------------------- results and reasons


class _LeakCheck:
    """Does a free text quote any hidden text (a 12-character run, or a whole short text)?"""

    def __init__(self, hidden: Sequence[str]) -> None:
        self.short = [t for t in hidden if 0 < len(t.strip()) < _GRAM]
        self.grams = {t[i : i + _GRAM] for t in hidden if len(t) >= _GRAM for i in range(len(t) - _GRAM + 1)}

    def leaks(self, text: str | None) -> bool:
        if not text:
            return False
        if any(s.strip() in text for s in self.short):
            return True
        return any(text[i : i + _GRAM] in self.grams for i in range(len(text) - _GRAM + 1))


def _scrub_results(
    results: GuardResults,
    decision: Decision,
    retention: RetentionMode,
    hidden: Sequence[str],
    kept: Sequence[str],
) -> tuple[GuardResults, Decision]:
    if retention == "full" or (retention == "redacted" and not hidden):
        return results, decision
    check = _LeakCheck(hidden)

    def scrubbed(llama: LlamaGuardResult | None) -> LlamaGuardResult | None:
        if llama is None or llama.output is None:
            return llama
        keep = _VERDICT.match(llama.output.strip()) if retention == "none" else not check.leaks(llama.output)
        return llama if keep else llama.model_copy(update={"output": None})

    prompt = [
        p
        if p.segment is None or (retention == "redacted" and _kept_segment(p.segment, kept, check))
        else p.model_copy(update={"segment": None if retention == "none" else _REDACTED})
        for p in results.prompt_guard
    ]
    errors = {name: _error_kind(text) if check.leaks(text) else text for name, text in results.errors.items()}
    reasons = [_scrub_reason(r, check) for r in decision.reasons]
    return (
        results.model_copy(update={"llama_guard": scrubbed(results.llama_guard), "prompt_guard": prompt,
                                   "llama_guard_extra": [scrubbed(r) for r in results.llama_guard_extra],
                                   "errors": errors}),
        decision.model_copy(update={"reasons": reasons}),
    )


def _kept_segment(segment: str, kept: Sequence[str], check: _LeakCheck) -> bool:
    return any(segment in text for text in kept) and not check.leaks(segment)


def _scrub_reason(reason: Reason, check: _LeakCheck) -> Reason:
    updates = {}
    if check.leaks(reason.detail):
        updates["detail"] = _REDACTED
    if check.leaks(reason.message):
        updates["message"] = _REDACTED
    return reason.model_copy(update=updates) if updates else reason


def _error_kind(text: str) -> str:
    head = text.split(":", 1)[0].strip()
    return head if re.fullmatch(r"[A-Za-z_][\w.]*", head) else "error"


def _latencies(results: GuardResults, given: Mapping[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    llama = [r for r in (results.llama_guard, *results.llama_guard_extra) if r is not None]
    if llama:
        out["llama_guard"] = max(r.latency_ms for r in llama)
    if results.prompt_guard:
        out["prompt_guard"] = max(p.latency_ms for p in results.prompt_guard)
    out.update(given or {})
    return out


def record_categories(record: AuditRecord) -> list[str]:
    """Hazard codes behind a record: its category reasons plus what Llama Guard reported."""
    codes = {r.code for r in record.decision.reasons if r.kind == "category" and r.code}
    for llama in (record.results.llama_guard, *record.results.llama_guard_extra):
        if llama is not None:
            codes.update(llama.categories)
    return sorted(codes)


def is_open_escalation(record: AuditRecord) -> bool:
    return record.direction != "review" and record.decision.action == Action.ESCALATE
