"""The reply channel's protocol: results reach their waiters whatever way Redis's bytes are cut."""

from __future__ import annotations

import asyncio
import json

from guard.executor.results import ResultListener, _ReplyProtocol


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def test_messages_cut_anywhere_or_sent_together_reach_their_waiters() -> None:
    async def main() -> None:
        listener = ResultListener("redis://127.0.0.1:1/0")  # never connects: bytes are fed by hand
        protocol = _ReplyProtocol(listener)
        metas = [{"task_id": f"t{i}", "status": "SUCCESS", "result": {"text": "a\r\n$3\r\n*é" * i}}
                 for i in range(3)]
        stream = b"*3\r\n" + _bulk(b"subscribe") + _bulk(b"ch") + b":1\r\n"
        stream += b"".join(b"*3\r\n" + _bulk(b"message") + _bulk(b"ch") + _bulk(json.dumps(meta).encode())
                           for meta in metas)
        loop = asyncio.get_running_loop()
        for size in (1, 7, len(stream)):
            waiters = [loop.create_future() for _ in metas]
            listener._waiters.update({meta["task_id"]: w for meta, w in zip(metas, waiters)})  # noqa: SLF001
            for start in range(0, len(stream), size):
                protocol.data_received(stream[start:start + size])
            assert [waiter.result() for waiter in waiters] == metas
            assert listener.pending == 0 and protocol._buf == b""  # noqa: SLF001
        assert protocol._subscribed.done()  # noqa: SLF001

    asyncio.run(main())
