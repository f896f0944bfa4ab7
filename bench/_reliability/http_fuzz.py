"""Schema-driven fuzzing of a live gateway: schemathesis generates requests from the gateway's own
OpenAPI document (valid and invalid, every operation), topped up with hypothesis-made chat-shaped
bodies (``props.RAW_MESSAGES``: near-valid messages, lone surrogates, template look-alikes) sent to
the chat, check and moderation routes, streaming and not.

Every answer must be: no 5xx, an error only in OpenAI's shape (``{"error": {"message", "type",
"param", "code"}}``), no traceback in a body, every stream event JSON (an error event in the same
shape); and the server must log no traceback meanwhile (``TracebackCounter``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from bench._reliability.harness import error_shaped
from bench._reliability.props import MESSAGE_TEXT, RAW_MESSAGES
from bench._reliability.stats import Tally


class TracebackCounter(logging.Handler):
    """Counts log records that carry a traceback (``log.exception``) while attached to the root."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.count += 1
            self.first = self.first or self.format(record)

    def __enter__(self) -> TracebackCounter:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)


def check_response(status: int, content_type: str, text: str) -> str | None:
    """What is wrong with one answer, or None."""
    if status >= 500:
        return f"HTTP {status}: {text[:300]}"
    if "Traceback (most recent call last)" in text:
        return f"traceback in a {status} body"
    if status >= 400:
        try:
            body = json.loads(text)
        except ValueError:
            return f"HTTP {status} body is not JSON: {text[:200]!r}"
        if not error_shaped(body):
            return f"HTTP {status} body is not an OpenAI error: {text[:300]}"
        return None
    if content_type.startswith("text/event-stream"):
        for line in text.splitlines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            try:
                event = json.loads(line[6:])
            except ValueError:
                return f"stream event is not JSON: {line[:200]!r}"
            if isinstance(event, dict) and "error" in event and not error_shaped(event):
                return f"stream error event is not an OpenAI error: {line[:300]}"
    return None


def _record(tally: Tally, status: int, content_type: str, text: str, what: str, strict: bool) -> None:
    problem = check_response(status, content_type, text)
    if problem is None:
        tally.add(f"{status // 100}xx")
        return
    tally.fail(f"{what}: {problem}")
    if strict:
        raise AssertionError(f"{what}: {problem}")


def _settings(examples: int, seed: int | None) -> Callable[[Any], Any]:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


def schemathesis_run(base_url: str, tally: Tally, *, examples: int, strict: bool, seed: int | None,
                     headers: dict[str, str] | None = None) -> None:
    """Every operation of the live OpenAPI document, valid then invalid inputs."""
    import schemathesis
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            what = f"{operation.method.upper()} {operation.path} ({mode.value})"

            @_settings(examples, seed)
            @given(operation.as_strategy(generation_mode=mode))
            def one(case: Any) -> None:
                try:
                    response = case.call(base_url=base_url, headers=headers, timeout=120)
                except Exception as error:  # noqa: BLE001 - connection dropped by the server: a finding
                    tally.fail(f"{what} {case.body!r:.200}: {type(error).__name__}: {error}")
                    if strict:
                        raise
                    return
                _record(tally, response.status_code, response.headers.get("content-type", [""])[0]
                        if isinstance(response.headers.get("content-type"), list)
                        else str(response.headers.get("content-type", "")), response.text,
                        f"{what} {case.body!r:.200}", strict)

            try:
                one()
            except Unsatisfiable:  # an operation without inputs to vary (e.g. GET /healthz)
                continue


ROUTES = ["/v1/chat/completions", "/v1/guard/check", "/v1/moderations"]
_BODIES = st.one_of(
    st.fixed_dictionaries({"model": st.sampled_from(["faulty", "x"]), "messages": RAW_MESSAGES},
                          optional={"stream": st.booleans(), "n": st.sampled_from([1, 2])}),
    st.fixed_dictionaries({"input": st.one_of(MESSAGE_TEXT, st.lists(MESSAGE_TEXT, max_size=3))}),
)


def shaped_run(base_url: str, tally: Tally, *, examples: int, strict: bool, seed: int | None,
               headers: dict[str, str] | None = None) -> None:
    """Chat-shaped bodies (near-valid messages with hostile text) on the routes that read them."""
    with httpx.Client(base_url=base_url, headers=headers or {}, timeout=120) as client:

        @_settings(examples, seed)
        @given(st.sampled_from(ROUTES), _BODIES)
        def one(route: str, body: dict[str, Any]) -> None:
            payload = json.dumps(body, ensure_ascii=True)  # lone surrogates travel as \\ud800 escapes
            try:
                response = client.post(route, content=payload, headers={"content-type": "application/json"})
            except httpx.HTTPError as error:  # the server dropped the connection: a finding, not a crash
                tally.fail(f"POST {route} {payload:.200}: {type(error).__name__}: {error}")
                if strict:
                    raise
                return
            _record(tally, response.status_code, response.headers.get("content-type", ""), response.text,
                    f"POST {route} {payload:.200}", strict)

        one()


def fuzz_gateway(base_url: str, *, schema_examples: int, shaped_examples: int, strict: bool = False,
                 seed: int | None = None, headers: dict[str, str] | None = None) -> Tally:
    tally = Tally("gateway HTTP fuzz")
    with TracebackCounter() as tracebacks:
        schemathesis_run(base_url, tally, examples=schema_examples, strict=strict, seed=seed, headers=headers)
        shaped_run(base_url, tally, examples=shaped_examples, strict=strict, seed=seed, headers=headers)
    if tracebacks.count:
        tally.fail(f"{tracebacks.count} traceback(s) logged by the server; first:\n{tracebacks.first}")
    return tally
