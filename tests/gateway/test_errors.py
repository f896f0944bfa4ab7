"""Every failure is an OpenAI-shaped error with the right status, as the official client sees it."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures.servers import KEYS
from tests.gateway.conftest import make_client, policy, user


def assert_openai_shape(error: openai.APIStatusError) -> None:
    body = error.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert "Traceback" not in error.response.text


def test_a_missing_or_unknown_key_is_a_401(gateway):
    with pytest.raises(openai.AuthenticationError) as caught:
        make_client(gateway.base_url, "sk-not-a-key").chat.completions.create(model="m", messages=user("hi"))
    assert caught.value.code == "invalid_api_key"
    assert_openai_shape(caught.value)
    response = httpx.post(f"{gateway.base_url}/chat/completions", json={"model": "m", "messages": user("hi")})
    assert response.status_code == 401


def test_a_malformed_message_is_a_400_that_names_it(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "robot", "content": "hi"}])
    assert caught.value.param == "messages[0].role"
    assert_openai_shape(caught.value)


def test_too_many_messages_or_characters_is_a_400(client):
    with pytest.raises(openai.BadRequestError, match="too many messages"):
        client.chat.completions.create(model="m", messages=user("hi") * 40)
    with pytest.raises(openai.BadRequestError, match="characters"):
        client.chat.completions.create(model="m", messages=user("x" * 9_000))


def test_a_body_over_the_limit_is_a_413(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "y" * 5_000}] * 20)
    assert caught.value.status_code == 413
    assert caught.value.code == "payload_too_large"
    assert_openai_shape(caught.value)


def test_a_conversation_longer_than_llama_guard_reads_is_a_400_when_the_policy_refuses_it(gateway, client):
    """``context.overflow: refuse``: 7 messages of 7,480 characters, about 11,000 tokens, more than the
    demo Llama Guard's 8,192 positions. (The default, ``split``, judges such a conversation in pieces.)"""
    sentence = "The weather is mild today and the garden needs water. "
    messages = [{"role": "user", "content": sentence * 136}] * 7
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=messages, extra_headers=policy("refuse-long"))
    assert caught.value.code == "context_length_exceeded" and "too long" in caught.value.message
    assert_openai_shape(caught.value)
    check = httpx.post(f"{gateway.url}/v1/guard/check", json={"messages": messages, "policy": "refuse-long"},
                       headers={"authorization": f"Bearer {KEYS['acme']}"}, timeout=60)
    assert check.status_code == 400 and check.json()["error"]["code"] == "context_length_exceeded"


def test_a_request_that_does_not_fit_the_schema_is_a_422(client):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model="m", messages="not a list")  # type: ignore[arg-type]
    assert caught.value.param == "messages"
    assert_openai_shape(caught.value)
    with pytest.raises(openai.UnprocessableEntityError):
        client.moderations.create(input=12)  # type: ignore[arg-type]


def test_an_unknown_policy_is_a_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="m", messages=user("hi"), extra_headers=policy("no-such-policy"))
    assert caught.value.code == "policy_not_found"


def test_a_failing_upstream_is_a_502(client):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="m", messages=user("[[status:500]]"))
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert_openai_shape(caught.value)
    with pytest.raises(openai.InternalServerError) as streamed:
        client.chat.completions.create(model="m", messages=user("[[status:503]]"), stream=True)
    assert streamed.value.status_code == 502


def test_an_upstream_4xx_passes_through_with_its_status(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="m", messages=user("[[status:404]]"))
    assert "scripted failure 404" in caught.value.message


def test_an_upstream_that_does_not_answer_in_time_is_a_504(client):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="m", messages=user("[[sleep_s:4]]"))
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"


def test_an_unknown_route_is_a_json_404(gateway):
    response = httpx.get(
        f"{gateway.base_url}/nothing-here", headers={"authorization": f"Bearer {KEYS['acme']}"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_chunked_body_is_cut_off_at_the_limit_with_a_413(gateway):
    def body():
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(80):
            yield b"z" * 1000
        yield b'"}]}'

    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        content=body(),
        timeout=30,
        headers={"authorization": f"Bearer {KEYS['acme']}", "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_an_unexpected_failure_in_chat_completions_is_a_plain_500_naming_the_request(gateway, monkeypatch):
    """The chat route is a pure ASGI endpoint, outside FastAPI's exception handling: a bug in it is
    still the one mapper's 500, in OpenAI's shape, with one request id header and no traceback."""
    app = gateway.server.server.config.app

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug that quotes sk-secret")

    monkeypatch.setattr(app.state.gateway.chat, "create", broken)
    response = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "m", "messages": user("hi")},
        headers={"authorization": f"Bearer {KEYS['acme']}", "x-request-id": "bug-1"},
    )
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal_error" and "bug-1" in error["message"]
    assert "sk-secret" not in response.text and "Traceback" not in response.text
    assert response.headers.get_list("x-request-id") == ["bug-1"]


def test_chat_completions_stays_in_the_openapi_schema_and_other_methods_are_a_405(gateway):
    schema = httpx.get(f"{gateway.url}/openapi.json").json()
    route = schema["paths"]["/v1/chat/completions"]["post"]
    assert route["requestBody"]["content"]["application/json"]["schema"]
    response = httpx.get(
        f"{gateway.base_url}/chat/completions", headers={"authorization": f"Bearer {KEYS['acme']}"}
    )
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
