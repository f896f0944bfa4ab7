"""The streaming response of chat completions: Starlette's ``StreamingResponse`` without anyio.

A ``hold_back`` window sends nothing for a while, and uvicorn drops writes to a client that left
without a word, so the response must watch for the client's disconnect to close the upstream
stream early. ``StreamingResponse`` does that with an anyio task group (a task, cancel scopes, a
task-group exit) for every request: about a seventh of the gateway's CPU per request. Here the body
is sent from the request's own task and one plain asyncio task waits for ``http.disconnect`` and
cancels the sender; the body iterator is closed either way (closing the upstream connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.body_iterator = content
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.current_task()
        assert sender is not None
        state = {"gone": False, "finished": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["finished"]:
                state["gone"] = True
                sender.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["gone"]:
                raise
            sender.uncancel()  # the client left: nothing more to send, and not an error
        finally:
            state["finished"] = True
            watcher.cancel()
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
