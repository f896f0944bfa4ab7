"""Idle keep-alive connections: the server must close them later than client pools expire them
(httpx: 5 s), else a request sent on a connection the server is closing is reset (seen under load
as ``ReadError``; docs/reliability.md). Real uvicorn servers on loopback, raw sockets."""

from __future__ import annotations

import socket
import time

from guard.gateway.server import KEEP_ALIVE_S, ServerThread
from guard.settings import GuardSettings
from guard.upstream.scripted import create_scripted_app

REQUEST = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n"


def ask(sock: socket.socket) -> bytes:
    sock.sendall(REQUEST)
    return sock.recv(65536)


def idle_then_ask(port: int, idle_s: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        assert ask(sock).startswith(b"HTTP/1.1 200")
        time.sleep(idle_s)
        try:
            return ask(sock)
        except OSError:  # reset: closed by the server
            return b""


def test_an_idle_connection_lives_as_long_as_the_setting_says():
    assert KEEP_ALIVE_S == GuardSettings().keep_alive_s  # what `guard serve` and ServerThread use
    with ServerThread(create_scripted_app(), keep_alive_s=0.5) as short, \
            ServerThread(create_scripted_app()) as default:
        assert idle_then_ask(short.port, 1.2) == b""  # closed by the server after 0.5 s
        assert idle_then_ask(default.port, 1.2).startswith(b"HTTP/1.1 200")
