"""Run an ASGI app on uvicorn: in the foreground (`guard serve`) or on a background thread
(`guard demo`, tests and benchmarks), always on a socket bound before the server starts, so a free
port can be picked (port 0) and known before the first request.

Idle keep-alive connections stay open ``GUARD_KEEP_ALIVE_S`` (75 s), not uvicorn's 5 s: a client
pool that keeps idle connections as long as the server (httpx: 5 s) or longer sometimes sends a
request on a connection the server is closing at that instant, and gets a reset. The client must
be the side that gives up first.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from guard.errors import ConfigError
from guard.gateway.heap import freeze_startup_heap
from guard.settings import GuardSettings

KEEP_ALIVE_S: float = GuardSettings.model_fields["keep_alive_s"].default


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _config(app: Any, host: str, port: int, log_level: str, keep_alive_s: float) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=keep_alive_s,  # type: ignore[arg-type]  # uvicorn takes a float too
        ws="none",
    )


def serve_forever(
    app: Any, host: str, port: int, *, log_level: str = "info", keep_alive_s: float = KEEP_ALIVE_S
) -> None:
    """Serve until SIGINT/SIGTERM (the calling thread must be the main thread for signals). The
    process's start-up objects are frozen out of the garbage collector's walks first
    (``guard.gateway.heap``): this is the serving process, not a test's thread."""
    sock = bind_socket(host, port)
    freeze_startup_heap()
    uvicorn.Server(_config(app, host, port, log_level, keep_alive_s)).run(sockets=[sock])


class ServerThread:
    """A uvicorn server on a daemon thread. ``start()`` returns once it accepts connections."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        keep_alive_s: float = KEEP_ALIVE_S,
    ) -> None:
        self._sock = bind_socket(host, port)
        self.host = host
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(_config(app, host, self.port, log_level, keep_alive_s))
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._sock])
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc

    def start(self, timeout_s: float = 60.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if self._error is not None or not self._thread.is_alive():
                raise ConfigError(f"server on {self.url} failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"server on {self.url} did not start within {timeout_s:g}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
