"""A serving process freezes its start-up objects out of the garbage collector's full walks."""

from __future__ import annotations

import gc

import uvicorn

from guard.gateway import server
from guard.gateway.heap import freeze_startup_heap


def test_freeze_startup_heap_moves_live_objects_out_of_the_collected_generations():
    marker = [[i] for i in range(1000)]  # lists: tracked by the collector
    try:
        assert freeze_startup_heap() >= len(marker)
        walked = {id(o) for o in gc.get_objects()}  # the three collected generations only
        assert not any(id(item) in walked for item in marker)
    finally:
        gc.unfreeze()
    assert id(marker[0]) in {id(o) for o in gc.get_objects()}  # and back after unfreezing


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
