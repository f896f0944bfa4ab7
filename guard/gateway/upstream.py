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

from guard.errors import BadInput, UpstreamError, UpstreamTimeout
from guard.gateway.config import UpstreamRoute, api_key_from_env
from guard.gateway.errors import UpstreamRejected
from guard.gateway.sse_client import ReadHint, SSEClient, StatusError

# httpcore's pool scans all of its connections (some of them twice over) whenever a request comes
# or goes, so one pool with 64+ open streams spends more CPU managing itself than relaying tokens.
# Several small pools, taken in turn, keep each scan short.
SHARDS = 8
# Idle connections expire (2 s) before common upstream servers close them: uvicorn (vLLM, `guard
# upstream`) closes after 5 s, httpx's default expiry is 5 s too, and with equal timeouts a request
# sent on a connection the server is closing at that instant fails (a 502 "ReadError" under load).
_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=32, keepalive_expiry=2.0)


class RawChunk(dict[str, Any]):
    """A parsed stream chunk that remembers the JSON text it came as, so an unchanged chunk is
    forwarded without encoding it again (a changed chunk is a new plain dict)."""

    __slots__ = ("raw",)

    def __init__(self, data: dict[str, Any], raw: bytes) -> None:
        super().__init__(data)
        self.raw = raw


class UpstreamClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        verify = ssl.create_default_context() if self.base_url.startswith("https") else False
        self._shards = [
            httpx.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                limits=_LIMITS,
                transport=transport,
                verify=verify,
                timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            )
            for _ in range(SHARDS)
        ]
        self._turn = itertools.count()
        self._sse = SSEClient(
            self.base_url, headers=headers, timeout_s=timeout_s, connect_timeout_s=min(timeout_s, 10.0)
        )

    @property
    def _client(self) -> httpx.AsyncClient:
        return self._shards[next(self._turn) % len(self._shards)]

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming chat completion: the upstream's JSON object."""
        try:
            response = await self._client.post(
                "/chat/completions",
                content=_payload(body, stream=False),
                headers={"content-type": "application/json"},
            )
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

    async def stream_chat(
        self, body: dict[str, Any], hint: ReadHint | None = None
    ) -> AsyncIterator[list[RawChunk]]:
        """Chunks of a streaming completion, parsed, in lists of those that arrived together (never
        empty); ends at ``[DONE]`` (or when the stream closes). ``hint``: see ``ReadHint``.

        Read with the lean ``SSEClient`` (this runs once per token); the body is read to its end
        after ``[DONE]``, so the connection can carry the next request."""
        payload = _payload(body, stream=True)
        done = False
        try:
            async for group in self._sse.groups("/chat/completions", payload, hint):
                if done:
                    continue
                chunks = []
                for data in group:
                    if data == b"[DONE]":
                        done = True
                        break
                    chunks.append(_event(data))
                if chunks:
                    yield chunks
        except StatusError as exc:
            raise status_error(exc.response.status, exc.response.body) from None

    async def models(self) -> dict[str, Any]:
        try:
            response = await self._client.get("/models")
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.base_url) from None
        await _raise_for_status(response)
        return response.json()

    async def aclose(self) -> None:
        self._sse.close()
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
            client = UpstreamClient(
                route.upstream,
                api_key=api_key_from_env(route.upstream_api_key_env),
                timeout_s=self._timeout_s,
                transport=self._transport,
            )
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


_decode = json.JSONDecoder().raw_decode  # json.loads minus its per-call encoding sniffing


def _event(payload: bytes) -> RawChunk:
    try:
        text = payload.decode()
        event, end = _decode(text)
        if end != len(text):
            raise ValueError("extra data after the JSON value")
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        raise UpstreamError("the upstream sent a stream event that is not JSON") from None
    if not isinstance(event, dict):
        raise UpstreamError("the upstream sent a stream event that is not a JSON object")
    if "error" in event:
        raise UpstreamError(f"the upstream failed mid-stream: {_message_of(event)}")
    return RawChunk(event, payload)


def _payload(body: dict[str, Any], *, stream: bool) -> bytes:
    """The request body for the upstream. JSON has no NaN or Infinity, but the gateway's JSON parser
    accepts them (``1e999``, ``NaN``): such a number in a forwarded field is the caller's error (400),
    not an encoder crash (was a 500 and a reset connection)."""
    try:
        return json.dumps({**body, "stream": stream}, allow_nan=False).encode()
    except ValueError:
        raise BadInput("the request carries a number JSON cannot represent (NaN or Infinity)") from None


async def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    await response.aread()
    raise status_error(response.status_code, response.content)


def status_error(status: int, body: bytes) -> UpstreamError:
    """The error for an upstream's non-2xx answer: its own 4xx about the request passes through;
    a refused gateway key, a 5xx or anything else is the upstream's failure (502), a 408/504 a
    timeout (504)."""
    message = _message_of(_json_or_none(body)) or body[:200].decode("utf-8", "replace") or f"HTTP {status}"
    if status in (401, 403):
        return UpstreamError(f"the upstream refused the gateway's credentials ({status}): {message}")
    if status in (408, 504):
        return UpstreamTimeout(f"the upstream timed out ({status}): {message}")
    if 400 <= status < 500:
        return UpstreamRejected(f"upstream: {message}", status=status)
    return UpstreamError(f"the upstream failed ({status}): {message}")


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
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
