"""An error answer is an answer too: when the upstream fails after the input was judged, the 502
leaves only once the input record is durable (with a slow store, not just usually).

The gateway writes the input record while the upstream call starts; the store is slowed here by
half a second per write, so an upstream failure always arrives first. The record must be in the
store the moment the client holds the 502: a gateway killed right after it answered keeps it (see
``test_gateway_kill`` for the kill itself)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bench._reliability.harness import error_shaped

SLOW_WRITE_S = 0.5


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_upstream_error_answer_leaves_after_its_input_record(fault_gateway, monkeypatch, stream):
    store = fault_gateway.services.audit
    write = store.append_async

    async def slow_write(records):
        await asyncio.sleep(SLOW_WRITE_S)
        return await write(records)

    monkeypatch.setattr(store, "append_async", slow_write)
    messages = [{"role": "user", "content": "hi [[status:500]]"}]
    body = {"model": "faulty", "stream": stream, "messages": messages}
    response = httpx.post(f"{fault_gateway.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 502 and error_shaped(response.json())
    records = fault_gateway.records(response.headers["x-request-id"])  # at once: no retry, no wait
    assert [(r.direction, r.decision.action.value) for r in records] == [("input", "allow")]
