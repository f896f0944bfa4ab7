"""A serving process freezes its start-up objects out of the garbage collector's full walks."""

from __future__ import annotations

import gc

import uvicorn

from guard.gateway import server
from guard.gateway.heap import freeze_startup_heap


def test_freeze_startup_heap_moves_live_objects_out_of_the_collected_generations():
    marker = [object() for _ in range(1000)]
    try:
        frozen = freeze_startup_heap()
        assert frozen >= len(marker)
        assert gc.get_freeze_count() == frozen
        assert sum(gc.get_count()) < 100  # the generations start empty after the freeze
    finally:
        gc.unfreeze()


def test_serve_forever_freezes_before_it_serves(monkeypatch):
    seen: list[int] = []

    def run(self, sockets=None):
        seen.append(gc.get_freeze_count())
        for sock in sockets or []:
            sock.close()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    try:
        server.serve_forever(object(), "127.0.0.1", 0)
    finally:
        gc.unfreeze()
    assert seen and seen[0] > 0
