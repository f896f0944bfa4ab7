"""The executor call path of CLI commands that send their checks through the Celery workers."""

from __future__ import annotations

import asyncio

from guard.settings import get_settings
from guard.types import (
    LlamaGuardRequest,
    LlamaGuardResult,
    Message,
    Overflow,
    PromptGuardRequest,
    PromptGuardResult,
)


def check_through_broker(broker: str, conversation: list[Message], *, decode: bool = False,
                         scanned: str | None = None,
                         overflow: Overflow = "split") -> tuple[LlamaGuardResult, PromptGuardResult | None]:
    """Llama Guard on ``conversation`` and Prompt Guard on ``scanned`` (when given), in parallel,
    on the workers behind ``broker``; typed errors (``ModelUnavailable``, ``GuardTimeout``) raise."""
    settings = get_settings().model_copy(update={"broker_url": broker})
    request = LlamaGuardRequest(conversation=conversation, decode=decode, overflow=overflow)
    return asyncio.run(_check(settings, request, scanned))


async def _check(settings, request, scanned):  # type: ignore[no-untyped-def]
    from guard.executor.celery import CeleryExecutor

    executor = CeleryExecutor(settings)
    timeout = settings.check_timeout_s
    try:
        calls = [executor.llama_guard([request], timeout)]
        if scanned is not None:
            calls.append(executor.prompt_guard([PromptGuardRequest(text=scanned, source="user")], timeout))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes[0][0], (outcomes[1][0] if len(outcomes) > 1 else None)
    finally:
        await executor.aclose()
