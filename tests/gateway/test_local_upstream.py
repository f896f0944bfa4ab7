"""`guard upstream`: the demo chat model behind OpenAI's chat-completions API, streaming included."""

from __future__ import annotations

import asyncio

from tests.fixtures.servers import LOCAL_MODEL
from tests.gateway.conftest import make_async_client, make_client, user


def test_streamed_and_whole_answers_are_the_same_greedy_text(local_upstream):
    client = make_client(f"{local_upstream.url}/v1")
    whole = client.chat.completions.create(model=LOCAL_MODEL, messages=user("Hello there!"), max_tokens=20)
    pieces, finishes = [], []
    for chunk in client.chat.completions.create(
        model=LOCAL_MODEL, messages=user("Hello there!"), max_tokens=20, stream=True
    ):
        pieces.append(chunk.choices[0].delta.content or "")
        finishes.append(chunk.choices[0].finish_reason)
    assert whole.choices[0].message.content == "".join(pieces) != ""
    assert whole.choices[0].finish_reason == finishes[-1] in ("stop", "length")
    assert whole.usage.completion_tokens <= 20 and whole.usage.prompt_tokens > 0
    assert [m.id for m in client.models.list()] == [LOCAL_MODEL]


def test_the_chat_model_mentions_the_hazard_word_when_asked(local_upstream):
    client = make_client(f"{local_upstream.url}/v1")
    reply = client.chat.completions.create(
        model=LOCAL_MODEL, messages=user("tell me about zorblax"), max_tokens=40
    )
    assert "zorblax" in reply.choices[0].message.content.lower()


def test_a_stop_string_cuts_the_answer_in_both_modes(local_upstream):
    client = make_client(f"{local_upstream.url}/v1")
    whole = client.chat.completions.create(model=LOCAL_MODEL, messages=user("Hello there!"), max_tokens=20)
    text = whole.choices[0].message.content
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = client.chat.completions.create(
        model=LOCAL_MODEL, messages=user("Hello there!"), max_tokens=20, stop=[stop]
    )
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=LOCAL_MODEL, messages=user("Hello there!"), max_tokens=20, stop=[stop], stream=True
        )
    )
    assert cut.choices[0].message.content == streamed == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_concurrent_async_requests_are_all_answered(local_upstream):
    async def run() -> list[str]:
        async with make_async_client(f"{local_upstream.url}/v1") as client:
            replies = await asyncio.gather(
                *(
                    client.chat.completions.create(model=LOCAL_MODEL, messages=user("Hi!"), max_tokens=8)
                    for _ in range(3)
                )
            )
            return [r.choices[0].message.content for r in replies]

    answers = asyncio.run(run())
    assert len(set(answers)) == 1 and answers[0]
