"""Client for the wrapped LLM: any OpenAI-compatible base URL (vLLM, Ollama, OpenAI, `guard upstream`).

One pooled ``httpx.AsyncClient`` per (base URL, key variable); the key itself is read from the
environment when the client is made and never logged. Every failure becomes a ``GuardError``:
unreachable or 5xx -> ``UpstreamError`` (502), too slow -> ``UpstreamTimeout`` (504), a 4xx about
the request -> ``UpstreamRejected`` with the upstream's own status and message.
"""

from __future__ import annotations

import itertools
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from guard.errors import UpstreamError, UpstreamTimeout
from guard.gateway.config import UpstreamRoute, api_key_from_env
from guard.gateway.errors import UpstreamRejected

# httpcore's pool scans all of its connections (some of them twice over) whenever a request comes
# or goes, so one pool with 64+ open streams spends more CPU managing itself than relaying tokens.
# Several small pools, taken in turn, keep each scan short.
SHARDS = 8
_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=32)


class RawChunk(dict[str, Any]):
    """A parsed stream chunk that remembers the JSON text it came as, so an unchanged chunk is
    forwarded without encoding it again (a changed chunk is a new plain dict)."""

    __slots__ = ("raw",)

    def __init__(self, data: dict[str, Any], raw: bytes) -> None:
        super().__init__(data)
        self.raw = raw


class UpstreamClient:
    def __init__(self, base_url: str, *, api_key: str | None, timeout_s: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        verify = ssl.create_default_context() if self.base_url.startswith("https") else False
        self._shards = [httpx.AsyncClient(
            base_url=self.base_url, headers=headers, limits=_LIMITS, transport=transport, verify=verify,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))) for _ in range(SHARDS)]
        self._turn = itertools.count()

    @property
    def _client(self) -> httpx.AsyncClient:
        return self._shards[next(self._turn) % len(self._shards)]

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming chat completion: the upstream's JSON object."""
        try:
            response = await self._client.post("/chat/completions", json={**body, "stream": False})
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from None
        await _raise_for_status(response)
        try:
            data = response.json()
        except ValueError:
            raise UpstreamError("the upstream answered with something that is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise UpstreamError("the upstream answer is not a chat completion object")
        return data

    async def stream_chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunks of a streaming completion, parsed; ends at ``[DONE]`` (or when the stream closes)."""
        try:
            async with self._client.stream("POST", "/chat/completions",
                                           json={**body, "stream": True}) as response:
                await _raise_for_status(response)
                async for chunk in _sse_events(response):
                    yield chunk
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from None

    async def models(self) -> dict[str, Any]:
        try:
            response = await self._client.get("/models")
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from None
        await _raise_for_status(response)
        return response.json()

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


class UpstreamPool:
    """Clients by route, made on first use and closed together at shutdown."""

    def __init__(self, *, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._timeout_s = timeout_s
        self._transport = transport
        self._clients: dict[tuple[str, str | None], UpstreamClient] = {}

    def client(self, route: UpstreamRoute) -> UpstreamClient:
        key = (route.upstream.rstrip("/"), route.upstream_api_key_env)
        client = self._clients.get(key)
        if client is None:
            client = UpstreamClient(route.upstream, api_key=api_key_from_env(route.upstream_api_key_env),
                                    timeout_s=self._timeout_s, transport=self._transport)
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


async def _sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Parse ``data:`` events straight from the body bytes (cheaper than httpx's line iterator:
    this runs once per token)."""
    buffer = b""
    done = False
    async for block in response.aiter_bytes():
        # After [DONE] the body is still read to its end, so the connection goes back to the pool.
        if done:
            continue
        buffer += block
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, comments (": ping"), event names
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            yield _event(payload)


def _event(payload: bytes) -> RawChunk:
    try:
        event = json.loads(payload)
    except ValueError:
        raise UpstreamError("the upstream sent a stream event that is not JSON") from None
    if not isinstance(event, dict):
        raise UpstreamError("the upstream sent a stream event that is not a JSON object")
    if "error" in event:
        raise UpstreamError(f"the upstream failed mid-stream: {_message_of(event)}")
    return RawChunk(event, payload)


async def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    await response.aread()
    message = _message_of(_json_or_none(response)) or response.text[:200] or response.reason_phrase
    status = response.status_code
    if status in (401, 403):
        raise UpstreamError(f"the upstream refused the gateway's credentials ({status}): {message}")
    if status == 408 or status == 504:
        raise UpstreamTimeout(f"the upstream timed out ({status}): {message}")
    if status < 500:
        raise UpstreamRejected(f"upstream: {message}", status=status)
    raise UpstreamError(f"the upstream failed ({status}): {message}")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _message_of(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message", ""))
        return str(error)
    return ""


def _transport_error(exc: httpx.HTTPError, base_url: str) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"the upstream at {base_url} did not answer in time")
    return UpstreamError(f"the upstream at {base_url} is unreachable: {type(exc).__name__}")
