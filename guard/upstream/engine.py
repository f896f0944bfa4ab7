"""Blocking generation with a local causal LM. Called from worker threads, never the event loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from guard.errors import BadInput, ModelUnavailable
from guard.types import Message

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy (the default here, unlike OpenAI's 1.0: demos stay stable)
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self._event.is_set(), dtype=torch.bool)


class _TextStreamer(BaseStreamer):
    """Decodes the growing completion and hands each new piece of text to ``on_text``.

    Text that ends in an incomplete UTF-8 sequence (shown as U+FFFD) is held until it completes.
    """

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        self._tokenizer = tokenizer
        self._on_text = on_text
        self._ids: list[int] = []
        self._sent = 0
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first pushes the prompt
            self._prompt_seen = True
            return
        self._ids.extend(int(i) for i in value.reshape(-1).tolist())
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        if len(text) > self._sent:
            self._on_text(text[self._sent :])
            self._sent = len(text)

    def end(self) -> None:
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if len(text) > self._sent:
            self._on_text(text[self._sent :])
            self._sent = len(text)


class ChatEngine:
    """One model, one generation at a time (a lock), greedy unless a temperature is given."""

    def __init__(self, model: Any, tokenizer: Any, name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, *, dtype: str = "auto", name: str | None = None) -> ChatEngine:
        path = Path(model_dir)
        if not path.is_dir():
            raise BadInput(f"--model {model_dir}: not a directory with a saved model")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            torch_dtype = _DTYPES.get(dtype, torch.float32)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"cannot load a causal LM from {path}: {exc}") from None
        model.eval()
        return cls(model, tokenizer, name or path.name)

    def render(self, messages: list[Message]) -> list[int]:
        turns = [{"role": m.role, "content": m.text} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        prompt = "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant:"
        return self.tokenizer(prompt)["input_ids"]

    def generate(
        self,
        messages: list[Message],
        params: GenerationParams,
        on_text: Callable[[str], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Generation:
        """Generate a completion; ``on_text`` receives text pieces as they are decoded."""
        ids = self.render(messages)
        pieces: list[str] = []

        def collect(text: str) -> None:
            pieces.append(text)
            if on_text is not None:
                on_text(text)

        streamer = _TextStreamer(self.tokenizer, collect)
        with self._lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            output = self.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                streamer=streamer,
                **self._sampling(params, cancelled),
            )
        new = output[0, len(ids) :].tolist()
        text, stopped = _cut_at_stop("".join(pieces), params.stop)
        ended = stopped or bool(new and new[-1] in self._eos_ids())
        return Generation(
            text=text,
            prompt_tokens=len(ids),
            completion_tokens=len(new),
            finish_reason="stop" if ended or len(new) < params.max_tokens else "length",
        )

    def _sampling(self, params: GenerationParams, cancelled: threading.Event | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "pad_token_id": self._pad_id()}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if cancelled is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_Cancelled(cancelled)])
        return kwargs

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return set()
        return set(eos) if isinstance(eos, list) else {int(eos)}

    def _pad_id(self) -> int | None:
        if self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        eos = self._eos_ids()
        return min(eos) if eos else None


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
