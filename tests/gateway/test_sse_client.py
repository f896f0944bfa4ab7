"""The lean SSE client against a real HTTP server (the scripted upstream)."""

from __future__ import annotations

import asyncio
import json

import pytest

from guard.errors import UpstreamError, UpstreamTimeout
from guard.gateway.server import bind_socket
from guard.gateway.sse_client import ReadHint, SSEClient, StatusError


def body(text: str) -> bytes:
    return json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": text}]}
    ).encode()


async def payloads(client: SSEClient, text: str) -> list[bytes]:
    return [p async for p in client.stream("/chat/completions", body(text))]


def test_reads_every_event_and_reuses_the_connection(scripted_upstream):
    async def run() -> tuple[list[bytes], list[bytes], bool]:
        client = SSEClient(f"{scripted_upstream.url}/v1", headers={}, timeout_s=10)
        first = await payloads(client, "[[words:3]]")
        (conn,) = client._idle
        second = await payloads(client, "[[words:40]]")
        reused = client._idle == [conn]
        client.close()
        return first, second, reused

    first, second, reused = asyncio.run(run())
    assert first[-1] == b"[DONE]" and len(first) == 1 + 3 + 1 + 1  # role, words, finish, done
    assert [json.loads(p)["choices"][0]["delta"].get("content") for p in first[1:4]] == ["w0", " w1", " w2"]
    assert len(second) == 43
    assert reused


def test_a_non_2xx_answer_carries_status_and_body(scripted_upstream):
    async def run() -> StatusError:
        client = SSEClient(f"{scripted_upstream.url}/v1", headers={}, timeout_s=10)
        with pytest.raises(StatusError) as caught:
            await payloads(client, "[[status:429]]")
        client.close()
        return caught.value

    error = asyncio.run(run())
    assert error.response.status == 429
    assert json.loads(error.response.body)["error"]["code"] == "scripted_429"


def test_a_slow_upstream_is_a_timeout_and_an_absent_one_unreachable(scripted_upstream):
    async def run() -> None:
        slow = SSEClient(f"{scripted_upstream.url}/v1", headers={}, timeout_s=0.3)
        with pytest.raises(UpstreamTimeout):
            await payloads(slow, "[[sleep_s:1]]")
        sock = bind_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        with pytest.raises(UpstreamError, match="unreachable"):
            await payloads(SSEClient(f"http://127.0.0.1:{port}/v1", headers={}, timeout_s=2), "hi")

    asyncio.run(run())


def test_a_stream_left_early_closes_its_connection(scripted_upstream):
    async def run() -> int:
        client = SSEClient(f"{scripted_upstream.url}/v1", headers={}, timeout_s=10)
        stream = client.stream("/chat/completions", body("[[words:50]]"))
        await anext(stream)
        await stream.aclose()
        idle = len(client._idle)
        assert await payloads(client, "[[words:2]]")  # a fresh connection works
        client.close()
        return idle

    assert asyncio.run(run()) == 0


def test_a_read_hint_wakes_the_reader_once_enough_events_may_have_come(scripted_upstream):
    text = "[[words:20]] [[delay_ms:5]]"

    async def run() -> tuple[list[list[bytes]], list[list[bytes]]]:
        client = SSEClient(f"{scripted_upstream.url}/v1", headers={}, timeout_s=10)
        hint = ReadHint()
        hint.events = 1000  # nothing to do before the end
        lazy = [g async for g in client.groups("/chat/completions", body(text), hint)]
        eager = [g async for g in client.groups("/chat/completions", body(text))]
        client.close()
        return lazy, eager

    lazy, eager = asyncio.run(run())
    assert [len(g) for g in lazy] == [1 + 20 + 1 + 1]  # one wake-up for the whole stream
    assert len(eager) > 1 and sum(len(g) for g in eager) == 23


def test_the_read_timeout_counts_from_the_last_data_not_from_the_start_of_a_long_wait(scripted_upstream):
    async def run() -> int:
        client = SSEClient(f"{scripted_upstream.url}/v1", headers={}, timeout_s=0.5)
        hint = ReadHint()
        hint.events = 1000
        # 20 chunks 50 ms apart: one wait of a second, never half a second without data
        groups = [
            g async for g in client.groups("/chat/completions", body("[[words:20]] [[delay_ms:50]]"), hint)
        ]
        with pytest.raises(UpstreamTimeout):  # but a silence longer than the timeout still ends it
            async for _ in client.groups("/chat/completions", body("[[words:2]] [[delay_ms:800]]"), hint):
                pass
        client.close()
        return sum(len(g) for g in groups)

    assert asyncio.run(run()) == 23
