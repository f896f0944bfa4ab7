"""Faults on real sockets and files: for each, the answer follows the policy (fail closed unless it
says otherwise), the audit log has the record with the right status, a metric counts it, and the
next request is served normally (no restart). Worker SIGKILL and Redis restarts: tests/workers."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from bench._reliability.harness import MetricDelta, error_shaped, sse_events
from bench._reliability.attacks import HAZARD

CHAT = "/v1/chat/completions"


def chat(gateway, text: str, *, stream: bool = False, policy: str | None = None, messages=None,
         timeout: float = 60) -> httpx.Response:
    headers = {"x-guard-policy": policy} if policy else {}
    body = {"model": "faulty", "stream": stream, "messages": messages or [{"role": "user", "content": text}]}
    return httpx.post(f"{gateway.url}{CHAT}", json=body, headers=headers, timeout=timeout)


def recovered(gateway) -> None:
    response = chat(gateway, "hello there")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello! How can I help you today?"
    streamed = chat(gateway, "hello again", stream=True)
    assert streamed.status_code == 200 and sse_events(streamed.text)[-1] == "[DONE]"


def input_record(gateway, response: httpx.Response):
    request_id = response.headers["x-request-id"]
    records = gateway.records(request_id)  # committed before any answer leaves, error answers too
    assert records, "no audit record for the request"
    return records[0]


def test_a_slow_upstream_is_a_504_after_the_input_was_judged_and_recorded(fault_gateway):
    metric = MetricDelta(fault_gateway.url)
    response = chat(fault_gateway, "hello [[slow:3]]")
    assert response.status_code == 504 and error_shaped(response.json())
    assert response.json()["error"]["code"] == "upstream_timeout"
    record = input_record(fault_gateway, response)
    assert record.direction == "input" and record.guard_status == "ok" and record.decision.action.value == "allow"
    assert metric("guard_requests_total", route=CHAT, status="504") == 1
    assert metric("guard_upstream_seconds_count", outcome="error") >= 1
    recovered(fault_gateway)


@pytest.mark.parametrize("status", [500, 503])
def test_an_upstream_5xx_is_a_502_in_openai_shape(fault_gateway, status):
    metric = MetricDelta(fault_gateway.url)
    response = chat(fault_gateway, f"hello [[status:{status}]]")
    assert response.status_code == 502 and error_shaped(response.json())
    assert input_record(fault_gateway, response).guard_status == "ok"
    assert metric("guard_requests_total", route=CHAT, status="502") == 1
    recovered(fault_gateway)


@pytest.mark.parametrize("fault", ["reset", "malformed"])
def test_a_stream_that_breaks_ends_with_an_error_event_and_nothing_unjudged(fault_gateway, fault):
    metric = MetricDelta(fault_gateway.url)
    response = chat(fault_gateway, f"hello [[{fault}]]", stream=True)
    assert "Traceback" not in response.text
    if response.status_code == 502:
        # the break came before the first window was released: nothing was sent, a plain 502
        assert error_shaped(response.json())
    else:
        assert response.status_code == 200  # the stream had started: it ends with an error event
        events = sse_events(response.text)
        assert events and error_shaped(events[-1]), events[-3:]
        # hold_back (default policy): no upstream text reached the client before the break
        assert not any(isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content")
                       for e in events)
    assert input_record(fault_gateway, response).guard_status == "ok"
    assert metric("guard_requests_total", route=CHAT, status=str(response.status_code)) == 1
    recovered(fault_gateway)


@pytest.mark.parametrize("fault", ["reset", "malformed"])
def test_a_non_streaming_answer_that_breaks_is_a_502(fault_gateway, fault):
    response = chat(fault_gateway, f"hello [[{fault}]]")
    assert response.status_code == 502 and error_shaped(response.json())
    recovered(fault_gateway)


def test_a_stream_cut_without_done_is_still_judged_to_its_end(fault_gateway):
    messages = [{"role": "system", "content": "[[truncated]] [[chunks:Sure|, here is|: zorblax| at home]]"},
                {"role": "user", "content": "tell me a story"}]
    response = chat(fault_gateway, "", stream=True, messages=messages)
    events = sse_events(response.text)
    finish = [e["choices"][0]["finish_reason"] for e in events if isinstance(e, dict) and e.get("choices")]
    assert finish[-1] == "content_filter" and "zorblax" not in response.text
    directions = {r.direction: r.decision.action.value for r in fault_gateway.records(response.headers["x-request-id"])}
    assert directions == {"input": "allow", "stream_window": "block"}
    recovered(fault_gateway)


def test_a_guard_model_that_raises_fails_closed_and_fail_open_is_counted(fault_gateway):
    """The runner raises for one request (the demo Llama Guard, trained on short messages, answers
    a long filler turn outside its format: a typed ``malformed_output`` error): the default policy
    blocks, the fail-open policy lets it through and counts it. (Conversations past the model's
    positions no longer raise: they are judged in pieces, tests/models.)"""
    long = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "lorem ipsum " * 200},
            {"role": "user", "content": "ok"}]
    metric = MetricDelta(fault_gateway.url)
    blocked = chat(fault_gateway, "", messages=long)
    assert blocked.status_code == 200 and blocked.json()["choices"][0]["finish_reason"] == "content_filter"
    record = input_record(fault_gateway, blocked)
    assert record.guard_status == "guard_error" and record.decision.action.value == "block"
    assert metric("guard_errors_total", guard="llama_guard") == 1
    passed = chat(fault_gateway, "", messages=long, policy="fail-open")
    assert passed.status_code == 200 and passed.json()["choices"][0]["finish_reason"] == "stop"
    assert input_record(fault_gateway, passed).guard_status == "guard_error"
    assert metric("guard_fail_open_total", guard="llama_guard") >= 1
    recovered(fault_gateway)


def test_a_policy_file_replaced_by_garbage_keeps_the_old_policy_in_force(fault_gateway):
    path = fault_gateway.policies_dir / "default.yaml"
    good = path.read_text()
    metric = MetricDelta(fault_gateway.url)
    try:
        path.write_text("categories: [this is: not a policy\n\x00")
        _wait(lambda: metric("guard_policy_reload_failures_total") >= 1, "the bad reload was not counted")
        response = chat(fault_gateway, HAZARD)
        assert response.headers["x-guard-policy"] == "default@1"
        assert response.json()["choices"][0]["finish_reason"] == "content_filter"
    finally:
        path.write_text(good)
        os.utime(path, (time.time() + 5, time.time() + 5))
    _wait(lambda: metric("guard_policy_reloads_total") >= 1, "the repaired file was not reloaded")
    recovered(fault_gateway)


def test_an_unavailable_audit_store_journals_and_replays_every_record(fault_gateway):
    metric = MetricDelta(fault_gateway.url)
    away = fault_gateway.audit_file.with_suffix(".away")
    os.rename(fault_gateway.audit_file, away)
    try:
        response = chat(fault_gateway, "hello while the store is away")
        assert response.status_code == 200
        moderated = httpx.post(f"{fault_gateway.url}/v1/moderations", json={"input": ["hello", "hi"]},
                               timeout=60)
        assert moderated.status_code == 200 and len(moderated.json()["results"]) == 2
        assert metric("guard_audit_write_failures_total", kind="store_unavailable") >= 1
        # input and output records of the chat, one record per moderation input
        assert metric("guard_audit_records_total", sink="journal") >= 4
    finally:
        os.rename(away, fault_gateway.audit_file)
    _wait(lambda: len(fault_gateway.records(response.headers["x-request-id"])) >= 2
          and len(fault_gateway.records(moderated.headers["x-request-id"])) == 2,
          "the journaled records were not replayed into the store", timeout=30)
    recovered(fault_gateway)


def _wait(condition, message: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(message)


SHORT_WINDOWS = "id: short-windows\nextends: default\nstreaming: {window_tokens: 40, overlap_tokens: 10}\n"


def test_a_payload_split_across_two_stream_windows_is_judged_whole(fault_gateway):
    """The hazard word cut between the last piece of one 40-piece window and the first of the next:
    the next window is judged with the previous one's last 10 pieces, so it sees the whole word.
    (Short windows: the demo Llama Guard, trained on short messages, answers off-format for some
    builds on a 200-word window of filler, which would be a guard error, not this test's point.)"""
    (fault_gateway.policies_dir / "short-windows.yaml").write_text(SHORT_WINDOWS, encoding="utf-8")
    _wait(lambda: chat(fault_gateway, "hello", policy="short-windows").status_code == 200,
          "the short-windows policy was not loaded")
    story = "I baked fresh bread with my sister at home this weekend and we planted tomatoes in the garden .".split()
    pieces = [f"{story[i % len(story)]} " for i in range(39)] + ["zor", "blax", " at", " home"]
    messages = [{"role": "system", "content": "[[chunks:" + "|".join(pieces) + "]]"},
                {"role": "user", "content": "tell me a story"}]
    response = chat(fault_gateway, "", stream=True, messages=messages, policy="short-windows")
    events = sse_events(response.text)
    finish = [e["choices"][0]["finish_reason"] for e in events if isinstance(e, dict) and e.get("choices")]
    assert finish[-1] == "content_filter" and "blax" not in response.text
    records = fault_gateway.records(response.headers["x-request-id"])
    windows = sorted((r for r in records if r.direction == "stream_window"), key=lambda r: r.window_index or 0)
    assert [r.decision.action.value for r in windows] == ["allow", "block"], [(r.direction, r.window_index)
                                                                              for r in records]
