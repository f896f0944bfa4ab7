"""A lean HTTP/1.1 client for one job: POST a JSON body and read a server-sent-event stream.

Why not httpx here: a token stream arrives one small chunk per network read, and httpx (httpcore
over anyio) spends about three times the CPU of a bare asyncio protocol on each read (a cancel scope
and several layers per read). Relaying 64 streams of tokens, that difference is most of the
gateway's CPU. This client is an ``asyncio.Protocol`` feeding ``httptools`` (the C parser uvicorn
uses: status line, headers, chunked transfer decoding), with keep-alive connection reuse, TLS,
connect and read timeouts. Everything else (non-streaming calls, model listing) stays on httpx.

Per token the work is kept small: the read timeout is one timer per connection, moved forward
lazily (not a timer made and cancelled per read); ``groups`` hands over every event that arrived
together as one list; and a reader that has nothing to do before N more events (a ``hold_back``
window that is not full yet) says so through a ``ReadHint``: the connection then buffers the bytes
and wakes the reader only once N events may have arrived, or at the end, instead of once per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from guard.errors import UpstreamError, UpstreamTimeout

MAX_IDLE = 64


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""


class ReadHint:
    """How many more events the reader can take before it has anything to do; 1 = wake it for
    every event. Set by the consumer between groups; read by ``SSEClient.groups`` before each wait.

    Waking early is harmless (the reader looks and sets a new hint), waking late is not: so the
    connection counts newlines, never fewer than the complete events received (an event is a
    ``data:`` line ending in a newline), and wakes the reader once ``events`` newlines arrived."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events = 1


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; the parser is renewed for each response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._error: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_s = 0.0
        self._active_at = 0.0  # when the current wait began or data last came
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self._pieces: deque[bytes] = deque()
        self._newlines = 0  # in the body held in _pieces
        self._want = 0  # wake the waiting reader once _newlines reaches this
        self._waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self._active_at = self._loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._error = UpstreamError(f"the upstream sent malformed HTTP: {exc}")
            self.close()
        if self._newlines >= self._want or self.complete or self.closed:
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    # ------------------------------------------------------------------ httptools callbacks

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)
        self._newlines += body.count(b"\n")

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful inside this callback
        self.complete = True

    # ------------------------------------------------------------------ reading

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, timeout_s: float, want: int = 0) -> None:
        """Until ``want`` newlines of body (any data when 0), the end or a failure arrived;
        ``UpstreamTimeout`` after ``timeout_s`` without any data."""
        if self._error is not None:
            raise self._error
        if self.closed:
            raise UpstreamError("the upstream closed the connection mid-response")
        self._want = want
        self._timeout_s = timeout_s
        self._active_at = self._loop.time()
        waiter = self._waiter = self._loop.create_future()
        if self._timer is None:  # one timer per connection, re-armed by _check_deadline
            self._timer = self._loop.call_at(self._active_at + timeout_s, self._check_deadline)
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_deadline(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # not waiting: the next wait starts a timer again
        deadline = self._active_at + self._timeout_s
        if self._loop.time() < deadline:  # data came, or the wait began, after this timer was set
            self._timer = self._loop.call_at(deadline, self._check_deadline)
            return
        waiter.set_exception(UpstreamTimeout("the upstream did not answer in time"))
        self.close()

    async def headers(self, timeout_s: float) -> int:
        while not self.headers_done:
            await self._wait(timeout_s)
        return self.status

    async def body(self, timeout_s: float, lines: int = 1) -> bytes | None:
        """The body received since the last call, once it holds ``lines`` newlines (or the
        response ended); None at its end."""
        while self._newlines < lines and not self.complete:
            await self._wait(timeout_s, lines)
        if not self._pieces:
            return None
        data = self._pieces.popleft() if len(self._pieces) == 1 else b"".join(self._pieces)
        self._pieces.clear()
        self._newlines = 0
        return data

    def send(self, request: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(request)

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self._error is None

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()


class SSEClient:
    """POST JSON, iterate ``data:`` payloads; one instance per upstream base URL."""

    def __init__(
        self, base_url: str, *, headers: dict[str, str], timeout_s: float, connect_timeout_s: float = 10.0
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"upstream URL {base_url!r} is not an http(s) URL")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {host_header}\r\n{extra}".encode("latin-1")
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []

    async def stream(self, path: str, body: bytes) -> AsyncIterator[bytes]:
        """The payload of each ``data:`` line (``[DONE]`` included) of a 2xx answer; a non-2xx
        answer raises ``StatusError`` with its body."""
        async with contextlib.aclosing(self.groups(path, body)) as groups:
            async for group in groups:
                for payload in group:
                    yield payload

    async def groups(
        self, path: str, body: bytes, hint: ReadHint | None = None
    ) -> AsyncIterator[list[bytes]]:
        """``stream``, as lists of the payloads that arrived together (never an empty list);
        with a ``hint``, only once ``hint.events`` more may have arrived (or at the end)."""
        conn, status = await self._start(path, body)
        done = False
        try:
            if not 200 <= status < 300:
                raise StatusError(Response(status, await self._read_all(conn)))
            buffer = b""
            while (piece := await conn.body(self._timeout_s, hint.events if hint else 1)) is not None:
                buffer += piece
                *lines, buffer = buffer.split(b"\n")
                group = [line[5:].strip() for line in lines if line.startswith(b"data:")]
                if group:
                    yield group
            done = True
        finally:
            self._release(conn, done)

    async def _start(self, path: str, body: bytes) -> tuple[_Connection, int]:
        request = self._request(path, body)
        for attempt in (1, 2):
            pooled = self._take_idle()
            conn = pooled or await self._connect()
            conn.send(request)
            try:
                return conn, await conn.headers(self._timeout_s)
            except UpstreamError:
                conn.close()
                # A kept-alive connection the server closed meanwhile: try once on a fresh one.
                if pooled is None or conn.received_any or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _request(self, path: str, body: bytes) -> bytes:
        return (
            f"POST {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1")
            + self._head
            + b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
            + body
        )

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(_Connection, self._host, self._port, ssl=self._ssl)
        except TimeoutError:
            raise UpstreamTimeout(
                f"connecting to the upstream at {self._host}:{self._port} timed out"
            ) from None
        except OSError as exc:
            raise UpstreamError(
                f"the upstream at {self._host}:{self._port} is unreachable: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        return conn

    async def _read_all(self, conn: _Connection) -> bytes:
        pieces = []
        while (piece := await conn.body(self._timeout_s)) is not None:
            pieces.append(piece)
        return b"".join(pieces)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    def _release(self, conn: _Connection, finished: bool) -> None:
        if finished and conn.reusable and len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            conn.close()  # a response not read to its end cannot carry the next request

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class StatusError(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(f"HTTP {response.status}")
        self.response = response
