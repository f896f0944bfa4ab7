"""build_record: metadata, scores and the decision are kept whole; content follows the retention
mode; unscanned text is never recorded as passed."""

from __future__ import annotations

import hashlib
import json

from guard.audit import build_record
from guard.audit.record import serialize_content
from guard.types import Action, GuardResults, Message, Reason
from tests.audit.helpers import category_reason, decision, llama, prompt_guard

SECRET = "my neighbour's zorblax recipe is in the shed"
BENIGN = "what's the weather like in Lisbon today?"


def _conversation() -> list[Message]:
    return [
        Message(role="system", content="You are a helpful assistant."),
        Message(role="user", content=BENIGN),
        Message(role="assistant", content="Sunny, 24 degrees."),
        Message(role="user", content=SECRET),
    ]


def _flagged(retention: str, **kwargs):
    results = GuardResults(
        llama_guard=llama(["S9"], output=kwargs.pop("output", None)),
        prompt_guard=[prompt_guard(0.02, segment=BENIGN), prompt_guard(0.97, segment=SECRET[:20])],
        errors=kwargs.pop("errors", {}),
    )
    reasons = [
        category_reason("S9", Action.BLOCK),
        Reason(
            kind="jailbreak",
            action=Action.FLAG,
            score=0.97,
            message_index=3,
            source="user",
            detail=kwargs.pop("detail", None),
        ),
    ]
    return build_record(
        request_id="req-1",
        direction="input",
        results=results,
        decision=decision(Action.BLOCK, reasons=reasons),
        content=_conversation(),
        retention=retention,
        tenant="acme",
        api_key_id="key-1",
        route="/v1/chat/completions",
        latency_ms={"total": 120.0},
    )


def test_full_keeps_content_metadata_scores_and_latencies():
    rec = _flagged("full")
    assert json.loads(rec.content)[3]["content"] == SECRET
    assert rec.content_sha256 == hashlib.sha256(serialize_content(_conversation()).encode()).hexdigest()
    assert (rec.request_id, rec.tenant, rec.api_key_id, rec.route) == (
        "req-1",
        "acme",
        "key-1",
        "/v1/chat/completions",
    )
    assert rec.policy == rec.decision.policy
    assert rec.results.llama_guard.category_scores == {"S9": 0.97}
    assert rec.latency_ms == {"llama_guard": 42.5, "prompt_guard": 7.25, "total": 120.0}
    assert rec.guard_status == "ok" and rec.prev_hash is None and rec.hash is None


def test_redacted_replaces_flagged_messages_and_keeps_the_rest():
    rec = _flagged("redacted")
    messages = json.loads(rec.content)
    assert messages[3]["content"] == "[redacted:S9,jailbreak]"
    assert messages[1]["content"] == "[redacted:S9]"  # Llama Guard judged every user turn
    assert messages[0]["content"] == "[redacted:S9]"  # and the system text, as user text
    assert messages[2]["content"] == "Sunny, 24 degrees."
    assert SECRET not in rec.model_dump_json()
    assert rec.content_sha256 == _flagged("full").content_sha256


def test_redacted_names_the_message_an_extra_judgement_flagged():
    """A hazard Llama Guard found in an earlier turn (an extra judgement, with its message index)
    redacts that message only, not every user turn."""
    earlier = llama(["S9"]).model_copy(update={"message_index": 1, "reading": "user turn"})
    reason = category_reason("S9", Action.BLOCK).model_copy(update={"message_index": 1})
    rec = build_record(request_id="r", direction="input",
                       results=GuardResults(llama_guard=llama(), llama_guard_extra=[earlier]),
                       decision=decision(Action.BLOCK, reasons=[reason]), content=_conversation(),
                       retention="redacted")
    assert [m["content"] for m in json.loads(rec.content)] == [
        "You are a helpful assistant.", "[redacted:S9]", "Sunny, 24 degrees.", SECRET]
    assert rec.results.llama_guard_extra[0].message_index == 1


def test_redacted_keeps_a_segment_only_when_its_message_was_kept():
    results = GuardResults(
        prompt_guard=[prompt_guard(0.02, segment="Sunny"), prompt_guard(0.9, segment="zorblax recipe")]
    )
    rec = build_record(
        request_id="r",
        direction="input",
        results=results,
        decision=decision(
            Action.FLAG, reasons=[Reason(kind="injection", action=Action.FLAG, message_index=3)]
        ),
        content=_conversation(),
        retention="redacted",
    )
    assert [p.segment for p in rec.results.prompt_guard] == ["Sunny", "[redacted]"]
    assert json.loads(rec.content)[1]["content"] == BENIGN  # only message 3 was named


def test_redacted_output_text_is_replaced_whole():
    rec = build_record(
        request_id="r",
        direction="output",
        results=GuardResults(llama_guard=llama(["S1"])),
        decision=decision(Action.REDACT, "output", [category_reason("S1", Action.REDACT)]),
        content="here is how to quintrex ...",
        retention="redacted",
    )
    assert rec.content == "[redacted:S1]"


def test_none_keeps_no_text_anywhere():
    rec = _flagged(
        "none",
        output=f"unsafe\nS9 because {SECRET}",
        errors={"prompt_guard": f"malformed_output: echoed {SECRET[5:30]}"},
        detail=f"matched '{SECRET[10:40]}'",
    )
    dumped = rec.model_dump_json()
    for fragment in (SECRET, SECRET[5:30], SECRET[10:40], BENIGN, "zorblax"):
        assert fragment not in dumped
    assert rec.content is None
    assert all(p.segment is None for p in rec.results.prompt_guard)
    assert rec.results.llama_guard.output is None  # not a bare verdict: dropped
    assert rec.results.errors == {"prompt_guard": "malformed_output"}
    # what replay needs is intact
    assert rec.results.llama_guard.categories == ["S9"] and rec.decision.action == Action.BLOCK
    assert [r.score for r in rec.decision.reasons] == [0.97, 0.97]
    assert rec.content_sha256 == _flagged("full").content_sha256


def test_none_keeps_a_bare_verdict_output():
    assert _flagged("none").results.llama_guard.output == "unsafe\nS9"


def test_text_that_no_guard_scanned_is_recorded_as_not_scanned():
    rec = build_record(
        request_id="r",
        direction="output",
        results=GuardResults(),
        decision=decision(Action.ALLOW, "output"),
        content="unchecked text",
    )
    assert rec.guard_status == "not_scanned"
    timed_out = build_record(
        request_id="r",
        direction="input",
        results=GuardResults(timeouts=["llama_guard"]),
        decision=decision(Action.ALLOW),
        content=_conversation(),
    )
    assert timed_out.guard_status == "timeout"
    failed = build_record(
        request_id="r",
        direction="input",
        results=GuardResults(llama_guard=llama()),
        decision=decision(Action.BLOCK, guard_status="guard_error"),
        content="x",
    )
    assert failed.guard_status == "guard_error"
