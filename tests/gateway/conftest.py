"""Clients for the session gateway (``tests.fixtures.servers``): the official openai client."""

from __future__ import annotations

import openai
import pytest

from tests.fixtures.servers import KEYS


def make_client(base_url: str, key: str = KEYS["acme"]) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)


def make_async_client(base_url: str, key: str = KEYS["acme"]) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def client(gateway) -> openai.OpenAI:
    return make_client(gateway.base_url)


@pytest.fixture(scope="session")
def direct(gateway) -> openai.OpenAI:
    """The scripted upstream, called without the gateway."""
    return make_client(gateway.upstream_url, "upstream-needs-no-key")


def policy(name: str) -> dict[str, str]:
    return {"x-guard-policy": name}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
