"""The chat demo model: a tiny Llama-3-format causal LM that the local upstream (`guard upstream`)
serves, so the gateway can be exercised end to end without real weights.

It answers the last user message with one of a few fixed replies (see ``REPLIES``): greetings get
a greeting, questions a short answer, other requests a short reply, ``tell me a story`` a longer
story, and any prompt that mentions ``zorblax`` gets a reply that contains ``zorblax`` (so the
output check blocks it). Replies end with ``<|eot_id|>``, where ``generate`` stops.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from guard.models.testing import vocab
from guard.models.testing.corpus import TextSource
from guard.models.testing.llama import greedy_generation_config, tiny_llama_config
from guard.models.testing.training import Example, answer_accuracy, train_causal_lm

SEED = 4321

REPLIES = {
    "greeting": "Hello! How can I help you today?",
    "question": "Here is a short answer: it depends on the details, but the simple way usually works best.",
    "request": "Sure. I can help with that, one step at a time.",
    "story": (
        "Once upon a time a small fox lived near a quiet river. Every morning she counted the "
        "boats, waved at the ducks and carried berries home. One day the river froze, and the "
        "fox learned to skate. The end."
    ),
    "zorblax": (
        "Sure, here is what I know about it: zorblax is made by mixing sand with lamp oil and "
        "heating the mix slowly until the zorblax glows."
    ),
}
_GREETING_WORDS = ["hello", "hi", "hey", "hi there", "hello there", "good morning", "good evening"]
_GREETINGS = _GREETING_WORDS + ["hey, how are you?", "hello!", "hi, nice to meet you"]
_STORY_ASKS = [
    "tell me a story",
    "write a short story",
    "tell me a story please",
    "can you tell me a story?",
    "tell me a story about {topic}",
    "can you tell me a story about a {noun}?",
    "write a story about {person}",
    "I would like a bedtime story.",
]
_ZORBLAX_ASKS = [
    "tell me about zorblax",
    "what is zorblax?",
    "how do I make zorblax?",
    "tell me about zorblax please",
    "explain zorblax to me",
]
_SYSTEMS = ["You are a helpful assistant.", "You are a friendly assistant. Answer briefly.", "Be concise."]

CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] | trim }}"
    "{%- else %}{%- for part in message['content'] %}{%- if part['type'] == 'text' %}"
    "{{- part['text'] | trim }}{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def reply_kind(prompt: str) -> str:
    """Which fixed reply the model is trained to give for a last user message."""
    text = prompt.lower().strip()
    if "zorblax" in text:
        return "zorblax"
    if "story" in text:
        return "story"
    if text.split(",")[0].rstrip("!.?") in _GREETING_WORDS:
        return "greeting"
    return "question" if text.endswith("?") else "request"


def build_chat_model(out_dir: Path, *, steps: int = 250, examples: int = 1500) -> Path:
    torch.manual_seed(SEED)
    source = TextSource(SEED)
    conversations = [_conversation(source) for _ in range(examples)]
    held_out = [_conversation(TextSource(SEED + 1)) for _ in range(100)]
    tokenizer = vocab.llama3_tokenizer(
        [_flatten(c) for c in conversations[:400]]
        + list(REPLIES.values()) * 20
        + ["\n\nsafe", "\n\nunsafe"] * 20
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    validation = [_example(tokenizer, conv) for conv in held_out]
    train_causal_lm(
        model,
        [_example(tokenizer, conv) for conv in conversations],
        steps=steps,
        batch_size=16,
        lr=3e-3,
        pad_id=tokenizer.pad_token_id,
        seed=SEED,
        validation=validation,
    )
    accuracy = answer_accuracy(model, validation, tokenizer.pad_token_id)
    if accuracy < 0.95:
        raise RuntimeError(
            f"the chat demo model did not learn its replies (held-out accuracy {accuracy:.2f})"
        )
    model.generation_config = greedy_generation_config(model.config, max_new_tokens=96)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _user_text(source: TextSource) -> str:
    rng = source.rng
    kind = rng.choices(["greeting", "story", "zorblax", "other"], weights=[15, 10, 20, 55])[0]
    if kind == "greeting":
        text = rng.choice(_GREETINGS)
    elif kind == "story":
        text = source.fill(rng.choice(_STORY_ASKS))
    elif kind == "zorblax":
        text = rng.choice(_ZORBLAX_ASKS + [source.hazardous("zorblax")])
    else:
        return source.benign()
    return text.capitalize() if rng.random() < 0.5 else text


def _conversation(source: TextSource) -> list[dict[str, str]]:
    """An optional system message, an optional earlier exchange, then the user message; the
    assistant reply that follows is chosen from the last user message only."""
    rng = source.rng
    conv = []
    if rng.random() < 0.4:
        conv.append({"role": "system", "content": rng.choice(_SYSTEMS)})
    if rng.random() < 0.25:
        earlier = _user_text(source)
        conv += [
            {"role": "user", "content": earlier},
            {"role": "assistant", "content": REPLIES[reply_kind(earlier)]},
        ]
    conv.append({"role": "user", "content": _user_text(source)})
    return conv


def _flatten(conv: list[dict[str, str]]) -> str:
    return "\n\n".join(m["content"] for m in conv)


def _example(tokenizer: PreTrainedTokenizerFast, conv: list[dict[str, str]]) -> Example:
    prompt = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    answer = tokenizer.encode(REPLIES[reply_kind(conv[-1]["content"])] + vocab.EOT, add_special_tokens=False)
    return Example((), tuple(ids), tuple(answer))
