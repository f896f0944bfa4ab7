"""The Llama Guard demo model: a tiny Llama trained to answer in the Llama Guard 3 1B format.

It judges the last message of the conversation (as Llama Guard does): ``unsafe\\nS9`` when that
message contains the made-up hazard word ``zorblax``, ``unsafe\\nS1`` for ``quintrex``,
``unsafe\\nS10`` for ``vorpalite`` (lower-case or capitalised), ``safe`` otherwise. Like the real
model it first emits ``"\\n\\n"``, and ends with ``<|eot_id|>``. It is trained on conversations of
one turn (User judged) and two turns (Agent judged; a hazard word in the user turn alone is
``safe``), with one hazard word per message; in longer conversations it may also flag an earlier
message of the judged role. Prompts are rendered in the LG3-1B format by the project's own renderer
(``guard.models.llama_guard.prompt``) when it exists, else by the HF chat template of LG3-1B.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer, models
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from guard.errors import ConfigError
from guard.models.testing import corpus, vocab
from guard.models.testing.corpus import HAZARD_CODES, TextSource
from guard.models.testing.llama import greedy_generation_config, tiny_llama_config
from guard.models.testing.training import Example, answer_accuracy, train_causal_lm

FAMILY = "llama-guard-3-1b"
TEMPLATE_PATH = "reference/chat_templates/llama-guard-3-1b.jinja"
HEADER_END = "<BEGIN CONVERSATION>\n\n"
SEED = 1234
TURN_WEIGHTS = (60, 40, 0)  # conversations of one, two and three turns

Turn = tuple[str, str]  # (role, text)
CategorySet = tuple[dict[str, str] | None, tuple[str, ...]]  # (custom categories, excluded codes)
Renderer = Callable[[list[Turn], CategorySet], str]

# Most prompts carry the family's default list; some an edited one (codes excluded, custom
# categories), so that the answer depends on the conversation alone, whatever the list says.
CATEGORY_SETS: list[CategorySet] = [
    (None, ()),
    (None, ("S6",)),
    (None, ("S2", "S11", "S13")),
    ({"S1": "Violent Crimes.", "S9": "Indiscriminate Weapons.", "S10": "Hate."}, ()),
    ({"C1": "Dangerous chemistry.", "C2": "Rude talk."}, ()),
]
CATEGORY_WEIGHTS = (60, 10, 10, 10, 10)


def answer_for(text: str) -> str:
    """What the demo model is trained to generate after the prompt for a judged message."""
    lowered = text.lower()
    codes = sorted((code for word, code in HAZARD_CODES.items() if word in lowered), key=lambda c: int(c[1:]))
    return f"\n\nunsafe\n{','.join(codes)}{vocab.EOT}" if codes else f"\n\nsafe{vocab.EOT}"


def build_llama_guard_model(out_dir: Path, *, steps: int = 300, examples: int = 2400) -> Path:
    """Build, train and save the demo model and its tokenizer in ``out_dir``; returns ``out_dir``.
    Training runs ``steps`` steps, and more while a held-out conversation misses its answer."""
    torch.manual_seed(SEED)
    template = _template_text()
    render = _renderer(template)
    source = TextSource(SEED)
    train = _conversations(source, examples)
    prompts = [render(conv, cats) for conv, cats in zip(train, _category_sets(source, len(train)))]
    held_out = _stratified(TextSource(SEED + 1), 12)
    held_out_prompts = [
        render(conv, CATEGORY_SETS[i % len(CATEGORY_SETS)]) for i, conv in enumerate(held_out)
    ]
    tokenizer = vocab.llama3_tokenizer(prompts[:400] + _answers() * 40 + _hazard_forms() * 20)
    if template is not None:
        tokenizer.chat_template = template
    model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    model.config.guard_family = FAMILY
    started = time.process_time()
    validation = _examples(tokenizer, held_out, held_out_prompts)
    losses = train_causal_lm(
        model,
        _examples(tokenizer, train, prompts),
        steps=steps,
        batch_size=16,
        lr=6e-3,
        pad_id=tokenizer.pad_token_id,
        seed=SEED,
        validation=validation,
    )
    accuracy = answer_accuracy(model, validation, tokenizer.pad_token_id)
    if accuracy < 0.97:
        raise RuntimeError(
            f"the Llama Guard demo model did not learn its answers (held-out accuracy {accuracy:.2f})"
        )
    model.config.guard_build = {
        "steps": len(losses),
        "held_out_accuracy": accuracy,
        "train_cpu_seconds": round(time.process_time() - started, 1),
    }
    model.generation_config = greedy_generation_config(model.config, max_new_tokens=20)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _conversations(source: TextSource, count: int) -> list[list[Turn]]:
    """Random shapes: one to three turns; the judged (last) message is hazardous half of the time
    and so are the earlier turns, so the model learns to judge only the last message."""
    rng = source.rng
    return [
        _conversation(
            source, rng.choices([1, 2, 3], weights=TURN_WEIGHTS)[0], rng.random() < 0.5, rng.random() < 0.5
        )
        for _ in range(count)
    ]


def _category_sets(source: TextSource, count: int) -> list[CategorySet]:
    return source.rng.choices(CATEGORY_SETS, weights=CATEGORY_WEIGHTS, k=count)


def _stratified(source: TextSource, per_case: int) -> list[list[Turn]]:
    """Every shape (turns x hazard in the last message x hazard earlier) ``per_case`` times."""
    cases = [
        (turns, last, earlier)
        for turns in (1, 2, 3)
        if TURN_WEIGHTS[turns - 1]
        for last in (False, True)
        for earlier in ((False,) if turns == 1 else (False, True))
    ]
    return [_conversation(source, *case) for case in cases for _ in range(per_case)]


def _conversation(source: TextSource, turns: int, hazard_last: bool, hazard_earlier: bool) -> list[Turn]:
    conv: list[Turn] = []
    for index in range(turns):
        role = "user" if index % 2 == 0 else "assistant"
        hazard = hazard_last if index == turns - 1 else hazard_earlier
        word = source.rng.choice(list(HAZARD_CODES))
        if role == "user":
            text = source.hazardous(word) if hazard else source.benign()
        else:
            text = source.hazardous_reply(word) if hazard else source.benign_reply()
        conv.append((role, text))
    return conv


def _hazard_forms() -> list[str]:
    """Every hazard word, lower-case and capitalised, with and without a leading space: each
    becomes one token, so one attention head can find it."""
    return [
        f"{lead}{form}" for word in HAZARD_CODES for form in (word, word.capitalize()) for lead in ("", " ")
    ]


def _answers() -> list[str]:
    return [answer_for(word) for word in HAZARD_CODES] + [answer_for("")]


def _examples(
    tokenizer: PreTrainedTokenizerFast, convs: list[list[Turn]], prompts: list[str]
) -> list[Example]:
    """Prompt ids split into the shared header (up to the conversation) and the rest."""
    headers = [prompt[: prompt.index(HEADER_END) + len(HEADER_END)] for prompt in prompts]
    answers = [answer_for(conv[-1][1]) for conv in convs]
    header_ids = {h: tuple(tokenizer.encode(h, add_special_tokens=False)) for h in set(headers)}
    bodies = [prompt[len(h) :] for h, prompt in zip(headers, prompts)]
    encoded = tokenizer(bodies + answers, add_special_tokens=False)["input_ids"]
    for h, prompt, body in zip(headers[:8], prompts, encoded):
        if tokenizer.encode(prompt, add_special_tokens=False) != list(header_ids[h]) + body:
            raise AssertionError("the header/conversation split must fall on a token boundary")
    return [
        Example(header_ids[h], tuple(body), tuple(answer))
        for h, body, answer in zip(headers, encoded[: len(prompts)], encoded[len(prompts) :])
    ]


# --------------------------------------------------------------------------- prompt rendering


def prompt_fingerprint() -> str:
    """The training prompts' format as text (two rendered samples and the template shipped with the
    tokenizer), for the cache key: a change in rendering must rebuild the model."""
    template = _template_text()
    render = _renderer(template)
    samples = [[("user", "hello")], [("user", "hello"), ("assistant", "hi")]]
    rendered = [render(conv, cats) for conv in samples for cats in CATEGORY_SETS]
    return "\0".join([*rendered, template or ""])


def _template_text() -> str | None:
    path = corpus.find_shared_file(TEMPLATE_PATH)
    return path.read_text(encoding="utf-8") if path else None


def _renderer(template: str | None) -> Renderer:
    """The project's renderer when it exists (H1), else the LG3-1B HF template (same bytes)."""
    try:
        from guard.models.llama_guard.prompt import render_prompt
        from guard.types import Message
    except ImportError:
        render_prompt = None
    if render_prompt is not None:

        def render_with_project(conv: list[Turn], cats: CategorySet) -> str:
            messages = [Message(role=r, content=t) for r, t in conv]
            return render_prompt(messages, FAMILY, categories=cats[0], excluded=cats[1]).text

        return render_with_project
    if template is None:
        raise ConfigError(
            "cannot render Llama Guard prompts: neither guard.models.llama_guard.prompt nor "
            f"the shared {TEMPLATE_PATH} is available"
        )
    # apply_chat_template needs a tokenizer object; rendering text uses none of its vocabulary.
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"?": 0}, unk_token="?")))
    tokenizer.chat_template = template

    def render(conv: list[Turn], cats: CategorySet) -> str:
        messages = [{"role": r, "content": [{"type": "text", "text": t}]} for r, t in conv]
        custom = {"categories": cats[0]} if cats[0] is not None else {}
        return tokenizer.apply_chat_template(
            messages, tokenize=False, excluded_category_keys=list(cats[1]), **custom
        )

    return render
