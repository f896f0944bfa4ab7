"""GuardedStream on its own: windows, overlap, hold_back vs stream_first, block and redact.

The window check here is a plain function over the window text (the flagged word is the tiny
guard's hazard word); the gateway tests run the same logic against the real models.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from guard.gateway.sse_client import ReadHint
from guard.gateway.streaming import GuardedStream, StreamSettings
from guard.types import Action, Decision, PolicyRef

POLICY = PolicyRef(id="p", version="1", hash="0" * 64)


def decision(action: Action) -> Decision:
    return Decision(action=action, effective_action=action, direction="output", policy=POLICY)


def chunk(content: str | None, finish: str | None = None) -> dict:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def upstream(words: list[str], delay: float = 0.0) -> AsyncIterator[dict]:
    yield chunk("")
    for word in words:
        if delay:
            await asyncio.sleep(delay)
        yield chunk(word)
    yield chunk(None, "stop")


class Checker:
    def __init__(self, flagged: str = "zorblax", action: Action = Action.BLOCK, delay: float = 0.0) -> None:
        self.flagged, self.action, self.delay = flagged, action, delay
        self.windows: list[tuple[int, str]] = []

    async def __call__(self, text: str, index: int) -> Decision:
        self.windows.append((index, text))
        if self.delay:
            await asyncio.sleep(self.delay)
        return decision(self.action if self.flagged in text else Action.ALLOW)


def run(stream: GuardedStream, source: AsyncIterator[dict]) -> list[dict]:
    async def collect() -> list[dict]:
        return [c async for c in stream.run(source)]

    return asyncio.run(collect())


def texts(chunks: list[dict]) -> list[str]:
    return [c["choices"][0]["delta"].get("content") or "" for c in chunks]


WORDS = [f" w{i}" for i in range(10)]


def test_hold_back_releases_every_chunk_of_a_clean_answer_in_order():
    checker = Checker()
    out = run(
        GuardedStream(StreamSettings("hold_back", 4, 1), checker, refusal="no", redaction="[x]"),
        upstream(WORDS),
    )
    assert "".join(texts(out)) == "".join(WORDS)
    assert out[-1]["choices"][0]["finish_reason"] == "stop"
    # 10 pieces in windows of 4: 3 checks, each after the first carrying one piece of overlap.
    assert [i for i, _ in checker.windows] == [0, 1, 2]
    assert checker.windows[1][1] == " w3" + "".join(WORDS[4:8])


def test_hold_back_never_releases_the_window_that_carries_the_flagged_text():
    words = WORDS[:6] + [" zorblax"] + WORDS[6:]
    out = run(
        GuardedStream(StreamSettings("hold_back", 4, 1), Checker(), refusal="no", redaction="[x]"),
        upstream(words),
    )
    released = "".join(texts(out))
    assert "zorblax" not in released
    assert released == "".join(words[:4])  # the first window only
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_hold_back_catches_a_word_split_across_two_windows_through_the_overlap():
    words = [" a", " b", " c", " zorb", "lax", " d", " e", " f"]
    out = run(
        GuardedStream(StreamSettings("hold_back", 4, 1), Checker(), refusal="no", redaction="[x]"),
        upstream(words),
    )
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert "lax" not in "".join(texts(out))


def test_a_block_before_anything_was_released_carries_the_refusal_text():
    out = run(
        GuardedStream(StreamSettings("hold_back", 4, 1), Checker(), refusal="Sorry.", redaction="[x]"),
        upstream([" zorblax", " w1"]),
    )
    assert texts(out) == ["Sorry."]
    assert out[0]["choices"][0]["finish_reason"] == "content_filter"
    assert out[0]["id"] == "c1" and out[0]["object"] == "chat.completion.chunk"


def test_hold_back_redact_replaces_the_window_and_goes_on():
    words = WORDS[:4] + [" zorblax", " w5", " w6", " w7"] + WORDS[8:]
    checker = Checker(action=Action.REDACT)
    out = run(
        GuardedStream(StreamSettings("hold_back", 4, 0), checker, refusal="no", redaction="[x]"),
        upstream(words),
    )
    assert "".join(texts(out)) == "".join(WORDS[:4]) + "[x]" + "".join(WORDS[8:])
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_first_releases_before_checking_and_stops_at_the_violation():
    words = [f" w{i}" for i in range(5)] + [" zorblax"] + [f" t{i}" for i in range(60)]
    stream = GuardedStream(StreamSettings("stream_first", 4, 1), Checker(), refusal="no", redaction="[x]")
    out = run(stream, upstream(words, delay=0.005))
    released = "".join(texts(out))
    assert "zorblax" in released  # stream_first: the window went out before its check
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert " t59" not in released  # stopped long before the end
    assert stream.outcome.blocked


def test_stream_first_holds_the_finish_chunk_until_the_last_window_passed():
    stream = GuardedStream(
        StreamSettings("stream_first", 4, 1), Checker(delay=0.05), refusal="no", redaction="[x]"
    )
    out = run(stream, upstream([" w1", " w2", " zorblax"]))
    assert [c["choices"][0]["finish_reason"] for c in out].count("stop") == 0
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_closing_the_guarded_stream_closes_the_upstream():
    closed = []

    async def source() -> AsyncIterator[dict]:
        try:
            for word in WORDS:
                yield chunk(word)
        finally:
            closed.append(True)

    async def take_two() -> None:
        stream = GuardedStream(StreamSettings("stream_first", 4, 1), Checker(), refusal="no", redaction="[x]")
        gen = stream.run(source())
        await anext(gen)
        await anext(gen)
        await gen.aclose()

    asyncio.run(take_two())
    assert closed == [True]


def test_the_blocking_rules_own_message_replaces_the_policy_refusal():
    async def check(text: str, index: int) -> Decision:
        if "zorblax" not in text:
            return decision(Action.ALLOW)
        return Decision(
            action=Action.BLOCK,
            effective_action=Action.BLOCK,
            direction="output",
            policy=POLICY,
            user_message="Please reach out to someone you trust.",
        )

    out = run(
        GuardedStream(StreamSettings("hold_back", 4, 1), check, refusal="Sorry.", redaction="[x]"),
        upstream([" zorblax"]),
    )
    assert texts(out) == ["Please reach out to someone you trust."]


def test_hold_back_tells_the_reader_how_many_chunks_it_can_take_before_a_window_is_full():
    hint = ReadHint()
    asked: list[int] = []

    async def groups() -> AsyncIterator[list[dict]]:
        for group in (
            [chunk("")],
            [chunk(" a")],
            [chunk(" b"), chunk(" c")],
            [chunk(" d"), chunk(" e")],
            [chunk(None, "stop")],
        ):
            asked.append(hint.events)
            yield group

    stream = GuardedStream(
        StreamSettings("hold_back", 4, 1), Checker(), refusal="no", redaction="[x]", hint=hint
    )

    async def collect() -> list[list[dict]]:
        return [b async for b in stream.batches(groups())]

    batches = asyncio.run(collect())
    assert asked == [1, 4, 3, 1, 3]  # never more than the chunks still missing from the window
    assert hint.events > 1000  # after the finishing chunk: nothing to do before the end
    assert [texts(b) for b in batches] == [["", " a", " b", " c", " d"], [" e", ""]]
