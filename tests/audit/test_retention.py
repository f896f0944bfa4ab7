"""`retention: none` leaves no message text anywhere in the store: every column of every row of every
table is scanned for it (SQLite and PostgreSQL)."""

from __future__ import annotations

from guard.audit import build_record
from guard.audit.review import decide
from guard.types import Action, GuardResults, Message, Reason
from tests.audit.helpers import all_cells, category_reason, decision, llama, prompt_guard

USER_TEXT = "Quorvex lantern instructions: mix zorblax with vinegar"
ASSISTANT_TEXT = "Certainly, the quorvex lantern needs three parts of zorblax"


def _records(retention: str):
    conversation = [Message(role="system", content="Be brief."), Message(role="user", content=USER_TEXT)]
    inbound = build_record(
        request_id="req-none",
        direction="input",
        tenant="acme",
        retention=retention,
        results=GuardResults(
            llama_guard=llama(["S9"], output="unsafe\nS9"),
            prompt_guard=[prompt_guard(0.99, segment=USER_TEXT[:30])],
            errors={"prompt_guard": f"malformed_output: saw {USER_TEXT[8:40]!r}"},
        ),
        decision=decision(
            Action.ESCALATE,
            reasons=[
                category_reason("S9", Action.ESCALATE),
                Reason(
                    kind="jailbreak", action=Action.FLAG, score=0.99, message_index=1, detail=USER_TEXT[:25]
                ),
            ],
        ),
        content=conversation,
    )
    outbound = build_record(
        request_id="req-none",
        direction="stream_window",
        window_index=0,
        tenant="acme",
        retention=retention,
        results=GuardResults(llama_guard=llama(["S9"], output=f"unsafe\nS9 {ASSISTANT_TEXT}")),
        decision=decision(Action.BLOCK, "output", [category_reason("S9", Action.BLOCK)]),
        content=ASSISTANT_TEXT,
    )
    return [inbound, outbound]


def _fragments() -> list[str]:
    return [USER_TEXT, ASSISTANT_TEXT, "Quorvex", "quorvex", "zorblax with", "three parts", USER_TEXT[8:40]]


def test_retention_none_leaves_no_message_text_anywhere(store, store_url):
    stored = store.append(_records("none"))
    decide(store, stored[0].id, "confirm", note="reviewed")
    cells = all_cells(store_url)
    assert len(cells) > 50  # the scan saw the records, their indexes and heads
    for fragment in _fragments():
        leaks = [c[:80] for c in cells if fragment in c]
        assert not leaks, f"{fragment!r} found in the store: {leaks}"
    assert store.verify().ok


def test_retention_full_stores_the_text(store, store_url):
    """The scan above can fail: with `full` it finds the text."""
    store.append(_records("full"))
    cells = all_cells(store_url)
    assert any(USER_TEXT in c for c in cells) and any(ASSISTANT_TEXT in c for c in cells)
