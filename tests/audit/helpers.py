"""Builders of realistic audit inputs, direct database access, and a TCP proxy to take PostgreSQL
"down" and "up" again while the store points at it (the stores themselves: ``tests.fixtures.audit``)."""

from __future__ import annotations

import socket
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from sqlalchemy.engine import make_url

from guard.audit import build_record
from guard.types import (
    Action,
    AuditRecord,
    Decision,
    GuardResults,
    LlamaGuardResult,
    Message,
    ModelInfo,
    PolicyRef,
    PromptGuardResult,
    Reason,
)

POLICY = PolicyRef(id="default", version="3", hash="9f2c" * 16)
LG_MODEL = ModelInfo(model="demo/llama-guard", revision="abc123", family="llama-guard-3-1b")
PG_MODEL = ModelInfo(model="demo/prompt-guard-2", revision="def456", family="prompt-guard-2")


def llama(
    categories: Sequence[str] = (), score: float | None = None, output: str | None = None
) -> LlamaGuardResult:
    unsafe = bool(categories)
    score = score if score is not None else (0.97 if unsafe else 0.02)
    return LlamaGuardResult(
        model=LG_MODEL,
        unsafe_score=score,
        unsafe_score_pair=score,
        categories=list(categories),
        category_scores={c: score for c in categories},
        output=output if output is not None else ("unsafe\n" + ",".join(categories) if unsafe else "safe"),
        latency_ms=42.5,
    )


def prompt_guard(score: float = 0.01, segment: str | None = None) -> PromptGuardResult:
    return PromptGuardResult(
        model=PG_MODEL, jailbreak_score=score, injection_score=score, segment=segment, latency_ms=7.25
    )


def decision(
    action: Action = Action.ALLOW,
    direction: str = "input",
    reasons: Sequence[Reason] = (),
    shadow: bool = False,
    guard_status: str = "ok",
) -> Decision:
    return Decision(
        action=action,
        effective_action=Action.ALLOW if shadow else action,
        direction=direction,
        reasons=list(reasons),
        policy=POLICY,
        shadow=shadow,
        guard_status=guard_status,
    )


def category_reason(code: str, action: Action, index: int | None = None) -> Reason:
    return Reason(kind="category", action=action, code=code, score=0.97, threshold=0.5, message_index=index)


def conversation(*texts: str) -> list[Message]:
    roles = ["user", "assistant"]
    return [Message(role=roles[i % 2], content=t) for i, t in enumerate(texts)]


def record(
    text: str = "hello there",
    *,
    tenant: str = "acme",
    action: Action = Action.ALLOW,
    categories: Sequence[str] = (),
    request_id: str | None = None,
    retention: str = "full",
    direction: str = "input",
    **extra: Any,
) -> AuditRecord:
    """An input-direction record for a one-message conversation flagged with ``categories``."""
    reasons = [category_reason(c, action) for c in categories]
    return build_record(
        request_id=request_id or uuid.uuid4().hex[:12],
        direction=direction,
        results=GuardResults(llama_guard=llama(categories), prompt_guard=[prompt_guard(segment=text)]),
        decision=decision(action, "output" if direction == "output" else "input", reasons),
        content=[Message(role="user", content=text)] if direction == "input" else text,
        retention=retention,
        tenant=tenant,
        api_key_id="key-1",
        route="/v1/chat/completions",
        **extra,
    )


# --------------------------------------------------------------------------- databases


def raw_execute(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Run one statement directly with the driver (sqlite3 / psycopg), commit, return rows."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(parsed.database)
        try:
            cur = conn.execute(sql.replace("%s", "?"), params)
            rows = cur.fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        dbname=parsed.database,
        user=parsed.username,
        options=parsed.query["options"],
    ) as conn:
        cur = conn.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows


def all_cells(url: str) -> list[str]:
    """Every value of every column of every row of every table, as text."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        tables = [r[0] for r in raw_execute(url, "SELECT name FROM sqlite_master WHERE type='table'")]
    else:
        tables = [
            r[0]
            for r in raw_execute(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ]
    cells = []
    for table in tables:
        for row in raw_execute(url, f'SELECT * FROM "{table}"'):
            cells.extend("" if v is None else str(v) for v in row)
    return cells


# --------------------------------------------------------------------------- a switchable TCP proxy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; ``stop()`` closes the port and every open connection
    (the store sees its server vanish), ``start()`` opens it again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.extend([client, upstream])
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
