"""A misbehaving OpenAI-compatible upstream on a real socket, for fault tests and the reliability
benchmark: raw asyncio HTTP/1.1, so it can do what a well-behaved framework will not (reset the
connection mid-stream, send broken server-sent events).

The last user message steers it, or a system message (which the guards do not judge, so a test can
script a hazardous answer to a benign prompt); anything without a directive gets a normal answer:

* ``[[slow:S]]``        sleep S seconds before answering;
* ``[[status:C]]``      answer HTTP C with an OpenAI-shaped error;
* ``[[reset]]``         stream: send two chunks, then reset the TCP connection (RST);
                        non-stream: reset without answering;
* ``[[malformed]]``     stream: a ``data:`` event that is not JSON; non-stream: a body that is not JSON;
* ``[[truncated]]``     stream: chunks, then the connection closes cleanly without ``[DONE]``;
* ``[[chunks:a|b|c]]``  stream (or answer) exactly these content pieces.

Run on a thread (``FaultyUpstream()`` as a context manager) or as a process:
``python -m bench._reliability.faulty_upstream --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import struct
import threading
import time
import uuid
from typing import Any

_DIRECTIVE = re.compile(r"\[\[(\w+)(?::([^\]]*))?\]\]")
ANSWER = ["Hello!", " How", " can", " I", " help", " you", " today?"]  # a demo chat reply the demo guard passes


def _steering_text(body: dict[str, Any]) -> str:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    system = [m.get("content") for m in messages if m.get("role") == "system" and isinstance(m.get("content"), str)]
    return "\n".join([*system, _last_user_text(messages)])


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
              500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Error")
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Handler:
    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):  # client gone, shutdown
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        self.requests += 1
        if method == "GET" and path.endswith("/models"):
            writer.write(_response(200, json.dumps({"object": "list", "data": [
                {"id": "faulty", "object": "model", "created": 0, "owned_by": "faulty"}]}).encode()))
        elif method == "POST" and path.endswith("/chat/completions"):
            await self._chat(json.loads(body or b"{}"), writer)
            return
        else:
            writer.write(_response(404, b'{"error": {"message": "not found", "type": "invalid_request_error"}}'))
        await writer.drain()

    async def _chat(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        text = _steering_text(body)
        directives = {m.group(1): m.group(2) or "" for m in _DIRECTIVE.finditer(text)}
        if "slow" in directives:
            await asyncio.sleep(float(directives["slow"] or 1))
        if "status" in directives:
            code = int(directives["status"])
            error = {"error": {"message": f"faulty upstream {code}", "type": "server_error", "code": str(code)}}
            writer.write(_response(code, json.dumps(error).encode()))
            await writer.drain()
            return
        pieces = directives["chunks"].split("|") if "chunks" in directives else ANSWER
        model = str(body.get("model") or "faulty")
        if body.get("stream"):
            await self._stream(writer, pieces, model, directives)
            return
        if "reset" in directives:
            _reset(writer)
            return
        if "malformed" in directives:
            writer.write(_response(200, b"{this is not json"))
        else:
            writer.write(_response(200, json.dumps(_completion(model, "".join(pieces))).encode()))
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, pieces: list[str], model: str,
                      directives: dict[str, str]) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                     b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"

        async def send(data: bytes) -> None:
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {"id": chunk_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        await send(event({"role": "assistant", "content": ""}))
        for index, piece in enumerate(pieces):
            if "reset" in directives and index == 2:
                _reset(writer)
                return
            if "malformed" in directives and index == 2:
                await send(b"data: {\"choices\": [{\"delta\": {\"content\": \"broken\"\n\n")
            await send(event({"content": piece}))
        if "truncated" in directives:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return
        await send(event({}, "stop"))
        await send(b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _completion(model: str, content: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FaultyUpstream:
    """The server on a background thread; ``url`` is its base (``.../v1`` is the API root)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.handler = _Handler()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> FaultyUpstream:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="faulty-upstream",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the faulty upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self.handler, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        async with server:
            await self._stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    async def serve() -> None:
        server = await asyncio.start_server(_Handler(), args.host, args.port)
        print(f"faulty upstream on http://{args.host}:{server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
