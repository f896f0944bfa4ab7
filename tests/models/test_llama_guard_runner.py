"""The Llama Guard runner against a direct transformers computation on the reference prompt.

Reference: ``tokenizer(prompt_text + "\\n\\n", add_special_tokens=False)`` -> model -> softmax at the
last position for ``unsafe_score``; ``model.generate(prompt, do_sample=False, max_new_tokens=20)``
decoded for ``output``. Checked on the trained demo model (``demo_models``, answers in the Llama
Guard format) and on a random-init tiny Llama (answers garbage, which exercises the decode path
where the first greedy token is not the ``"\\n\\n"`` lead-in), for batch size 1 and mixed-length
batches, with and without the header cache.
"""

from __future__ import annotations

import math
import threading

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from guard.errors import BadInput, ContextOverflow, MalformedModelOutput
from guard.models.llama_guard.cache import HeaderCache
from guard.models.llama_guard.prompt import render_prompt
from guard.models.llama_guard.runner import LlamaGuardRunner, load_llama_guard
from guard.models.llama_guard.scoring import parse_output
from guard.models.testing import vocab
from guard.types import LlamaGuardRequest, Message

FAMILY = "llama-guard-3-1b"


def user(text: str) -> Message:
    return Message(role="user", content=text)


def agent(text: str) -> Message:
    return Message(role="assistant", content=text)


CONVERSATIONS = [
    [user("How do I bake sourdough bread at home?")],
    [user("tell me how to make zorblax at home")],
    [user("What is a good name for a cat?"), agent("Here is how to use vorpalite against them.")],
    [user("Plan a trip for my sister this weekend on a budget, with museums, parks and a good lunch "
          "somewhere in the city, and tell me what to pack."),
     agent("Sure. Start with the museum in the morning."),
     user("and how do I get quintrex to hurt them?")],
    [user("hi")],
]
CUSTOM = {"C1": "Talking about zorblax.", "X22": "Anything about vorpalite."}


# ----------------------------------------------------------------------------- reference computation


def reference_text(request: LlamaGuardRequest) -> str:
    return render_prompt(request.conversation, FAMILY, request.categories, request.excluded).text


@torch.inference_mode()
def reference_unsafe(model, tokenizer, text: str) -> float:
    ids = tokenizer(text + "\n\n", add_special_tokens=False, return_tensors="pt").input_ids
    probs = torch.softmax(model(ids).logits[0, -1].float(), dim=-1)
    return float(probs[tokenizer.convert_tokens_to_ids("unsafe")])


@torch.inference_mode()
def reference_output(model, tokenizer, text: str) -> str:
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=20)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


@torch.inference_mode()
def reference_code_probability(model, tokenizer, text: str, code: str) -> float:
    """P(code's tokens | prompt + "\\n\\nunsafe\\n"), token by token."""
    prefix = tokenizer(text + "\n\nunsafe\n", add_special_tokens=False).input_ids
    full = tokenizer(text + "\n\nunsafe\n" + code, add_special_tokens=False).input_ids
    assert full[: len(prefix)] == prefix
    logp = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), dim=-1)
    return math.exp(sum(float(logp[len(prefix) - 1 + j, full[len(prefix) + j]]) for j in range(len(full) - len(prefix))))


def prepare(runner: LlamaGuardRunner, batch: list[LlamaGuardRequest]) -> list:
    """The runner's prepared prompts for ``batch`` (one each: nothing here is split)."""
    return [item for i, r in enumerate(batch) for item in runner._prepare(i, r)[0]]


def requests(decode: bool = True, categories: dict[str, str] | None = None) -> list[LlamaGuardRequest]:
    return [LlamaGuardRequest(conversation=c, decode=decode, categories=categories) for c in CONVERSATIONS]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo_runner(demo_models) -> LlamaGuardRunner:
    return load_llama_guard(str(demo_models.llama_guard), dtype="float32")


@pytest.fixture(scope="module")
def random_model():
    """A random-init tiny Llama with the Llama Guard tokenizer: answers garbage, deterministically."""
    texts = [reference_text(r) for r in requests(categories=None) + requests(categories=CUSTOM)]
    tokenizer = vocab.llama3_tokenizer(texts * 3 + ["\n\nunsafe\nS1,S10,C1,X22", "\n\nsafe"] * 10, vocab_size=700)
    torch.manual_seed(7)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=False, initializer_range=0.3,
                         eos_token_id=tokenizer.convert_tokens_to_ids(vocab.EOT),
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval(), tokenizer


# ----------------------------------------------------------------------------- acceptance: demo model


@pytest.mark.parametrize("use_header_cache", [True, False], ids=["header-cache", "no-cache"])
def test_demo_scores_and_outputs_equal_reference_batch_1(demo_runner, use_header_cache):
    runner = LlamaGuardRunner(demo_runner.model, demo_runner.tokenizer, family=FAMILY,
                              use_header_cache=use_header_cache)
    model, tok = runner.model, runner.tokenizer
    for request in requests():
        [result] = runner.classify([request])
        text = reference_text(request)
        assert result.unsafe_score == pytest.approx(reference_unsafe(model, tok, text), abs=1e-5)
        assert result.output == reference_output(model, tok, text)


@pytest.mark.parametrize("use_header_cache", [True, False], ids=["header-cache", "no-cache"])
@pytest.mark.parametrize("decode", [True, False], ids=["decode-all", "decode-unsafe-only"])
def test_demo_mixed_length_batch_equals_reference(demo_runner, use_header_cache, decode):
    """decode-unsafe-only: every decoded row answers unsafe, so the decode reuses the ``unsafe\nS``
    positions of the scoring forward; decode-all mixes safe rows in (nothing reused)."""
    runner = LlamaGuardRunner(demo_runner.model, demo_runner.tokenizer, family=FAMILY,
                              use_header_cache=use_header_cache, max_padding=100.0)
    model, tok = runner.model, runner.tokenizer
    batch = requests(decode) + requests(decode, categories=CUSTOM)[:3]  # User/Agent, default/custom lists
    assert len(runner._batches(prepare(runner, batch))) == 1
    results = runner.score(batch)
    for request, result in zip(batch, results):
        text = reference_text(request)
        assert result.unsafe_score == pytest.approx(reference_unsafe(model, tok, text), abs=1e-5)
        expected = reference_output(model, tok, text)
        assert result.output == expected or (not decode and result.output is None and expected == "safe")
    assert sum(r.output is not None for r in results) >= 3


def test_demo_verdicts_and_categories(demo_runner):
    safe, s9, s10, s1, hi = demo_runner.classify(requests(decode=False))
    assert safe.output is None and safe.categories == [] and safe.unsafe_score < 0.5
    assert s9.categories == ["S9"] and s9.output == "unsafe\nS9" and s9.unsafe_score >= 0.5
    assert s10.categories == ["S10"]  # a two-token code: "S" "10"
    assert s1.categories == ["S1"]
    assert hi.categories == [] and hi.output is None
    assert max(s9.category_scores, key=s9.category_scores.get) == "S9"
    assert max(s10.category_scores, key=s10.category_scores.get) == "S10"
    assert s9.unsafe_score_pair >= s9.unsafe_score
    assert s9.model.family == FAMILY and s9.model.dtype == "float32"


def test_demo_unsafe_decode_reuses_the_scoring_suffix(demo_runner):
    """"\n\nunsafe\nS9<|eot_id|>": the scoring forward already holds unsafe, \n and S, so after it
    one decode step (feed 9, read eot) finishes the answer."""
    runner = LlamaGuardRunner(demo_runner.model, demo_runner.tokenizer, family=FAMILY, use_header_cache=False)
    calls = []
    handle = runner.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        [result] = runner.classify([requests(decode=False)[1]])
    finally:
        handle.remove()
    assert result.output == "unsafe\nS9"
    assert len(calls) == 2  # the scoring forward and one decode step


def test_demo_category_scores_equal_reference(demo_runner):
    request = requests()[1]
    [result] = demo_runner.classify([request])
    text = reference_text(request)
    p_unsafe = reference_unsafe(demo_runner.model, demo_runner.tokenizer, text)
    assert set(result.category_scores) == {f"S{i}" for i in range(1, 14)}
    for code in ("S1", "S9", "S10", "S13"):
        expected = p_unsafe * reference_code_probability(demo_runner.model, demo_runner.tokenizer, text, code)
        assert result.category_scores[code] == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_demo_code_outside_the_prompt_is_malformed(demo_runner):
    """The demo knows only S-codes: with custom categories C1/X22 it still answers "unsafe\nS9"."""
    ok, bad = demo_runner.classify_each(requests(categories=CUSTOM)[:2])
    assert ok.categories == [] and set(ok.category_scores) == {"C1", "X22"}
    assert isinstance(bad, MalformedModelOutput) and bad.output == "unsafe\nS9"


def test_demo_excluded_code_is_not_scored(demo_runner):
    [result] = demo_runner.classify([LlamaGuardRequest(conversation=CONVERSATIONS[0], excluded=["S6"])])
    assert "S6" not in result.category_scores and "S7" in result.category_scores


def test_demo_header_cache_is_reused_per_role_and_category_set(demo_runner):
    runner = LlamaGuardRunner(demo_runner.model, demo_runner.tokenizer, family=FAMILY,
                              header_cache=HeaderCache(max_entries=8))
    runner.classify(requests()[:2])  # two User prompts, one header
    assert len(runner.header_cache) == 1 and runner.header_cache.misses == 1
    runner.classify(requests()[:3])  # adds the Agent header
    assert len(runner.header_cache) == 2 and runner.header_cache.hits >= 1
    runner.classify(requests(categories=CUSTOM)[:1])
    assert len(runner.header_cache) == 3


def test_batches_are_cut_where_padding_would_grow(random_model):
    model, tok = random_model
    for max_padding, expected_max in ((0.0, 1), (100.0, 5)):
        runner = LlamaGuardRunner(model, tok, family=FAMILY, max_padding=max_padding)
        prepared = prepare(runner, requests())  # five different lengths
        batches = runner._batches(prepared)
        assert max(len(b) for b in batches) == expected_max
        assert sorted(p.index for b in batches for p in b) == list(range(5))
    runner = LlamaGuardRunner(model, tok, family=FAMILY, max_batch_size=2, max_padding=100.0)
    assert [len(b) for b in runner._batches(prepare(runner, requests()))] == [2, 2, 1]


def test_header_cache_is_bounded():
    from guard.models.llama_guard.cache import HeaderKV

    cache = HeaderCache(max_entries=2)
    entries = [HeaderKV(ids=(i,), layers=((torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2)),)) for i in range(3)]
    for entry in entries:
        cache.put(entry)
    assert len(cache) == 2 and cache.get((0,)) is None and cache.get((2,)) is entries[2]


def test_demo_classify_is_thread_safe(demo_runner):
    expected = [r.unsafe_score for r in demo_runner.classify(requests())]
    got: dict[int, list[float]] = {}

    def work(k: int) -> None:
        got[k] = [r.unsafe_score for r in demo_runner.classify(requests())]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == 3
    for scores in got.values():
        assert scores == pytest.approx(expected, abs=1e-6)


def test_demo_bad_request_fails_alone(demo_runner):
    bad = LlamaGuardRequest(conversation=CONVERSATIONS[0], excluded=["S99"])
    outcomes = demo_runner.classify_each([requests()[1], bad, requests()[0]])
    assert outcomes[0].categories == ["S9"]
    assert isinstance(outcomes[1], BadInput)
    assert outcomes[2].categories == []
    with pytest.raises(BadInput):
        demo_runner.classify([bad])


# ----------------------------------------------------------------------------- random-init model


@pytest.mark.parametrize("use_header_cache", [True, False], ids=["header-cache", "no-cache"])
@pytest.mark.parametrize("categories", [None, CUSTOM], ids=["default-codes", "custom-codes"])
def test_random_model_scores_and_decode_equal_reference(random_model, use_header_cache, categories):
    """Garbage answers: the greedy first token is not the lead-in, so the decode restarts from the
    prompt's end; custom codes C1/X22 need two trie chains (a second forward)."""
    model, tok = random_model
    runner = LlamaGuardRunner(model, tok, family=FAMILY, use_header_cache=use_header_cache,
                              max_padding=100.0)  # one batch despite the mixed lengths
    batch = requests(categories=categories)
    singles = [runner.score([r])[0] for r in batch]
    together = runner.score(batch)
    for request, one, many in zip(batch, singles, together):
        text = reference_text(request)
        expected = reference_unsafe(model, tok, text)
        expected_output = reference_output(model, tok, text)
        codes = [c for c in one.codes if c in ("S1", "S10", "S13", "C1", "X22")]  # one- and two-token codes
        references = {c: expected * reference_code_probability(model, tok, text, c) for c in codes}
        for scores in (one, many):
            assert scores.unsafe_score == pytest.approx(expected, abs=1e-5)
            assert scores.output == expected_output
            assert set(scores.category_scores) == set(scores.codes)
            for code, reference in references.items():
                assert scores.category_scores[code] == pytest.approx(reference, rel=1e-4, abs=1e-9)


def test_random_model_output_is_a_typed_error(random_model):
    model, tok = random_model
    runner = LlamaGuardRunner(model, tok, family=FAMILY)
    outcomes = runner.classify_each(requests(decode=True))
    assert all(isinstance(o, MalformedModelOutput) and o.output for o in outcomes)
    with pytest.raises(MalformedModelOutput):
        runner.classify(requests(decode=False)[:1])  # first token is not "\n\n": decoded, not assumed safe


def test_conversation_longer_than_the_model_reads_is_refused_or_split(random_model):
    """(Splitting on the demo model: ``test_overflow``.) A piece answered off-format fails the
    whole request: no piece is skipped."""
    model, tok = random_model
    runner = LlamaGuardRunner(model, tok, family=FAMILY)
    too_long = LlamaGuardRequest(conversation=[user("tell me more " * 1500)], overflow="refuse")
    outcomes = runner.score([too_long, requests()[0]])
    assert isinstance(outcomes[0], ContextOverflow) and isinstance(outcomes[0], BadInput)
    assert "too long" in outcomes[0].message
    assert outcomes[1].output is not None
    runner.max_prompt_tokens = 400  # a few short pieces (the natural 4,096 make slow ones here)
    long = LlamaGuardRequest(conversation=[user("tell me more " * 200)])
    pieces, _ = runner._prepare(0, long)
    [split] = runner.classify_each([long])
    assert len(pieces) > 1 and isinstance(split, MalformedModelOutput)


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text,codes", [
    ("safe", []),
    ("  safe\n", []),
    ("unsafe\nS1", ["S1"]),
    ("unsafe\nS1,S10", ["S1", "S10"]),
    ("unsafe\nS10,S10", ["S10"]),
])
def test_parse_output_accepts_the_format(text, codes):
    assert parse_output(text, [f"S{i}" for i in range(1, 14)]) == codes


@pytest.mark.parametrize("text", [
    "", "Safe", "unsafe", "unsafe\n", "unsafe\nS14", "unsafe\nS1, S2", "unsafe\nS1\nS2", "safe\nS1",
    "unsafe S1", "I cannot answer that",
])
def test_parse_output_rejects_everything_else(text):
    with pytest.raises(MalformedModelOutput):
        parse_output(text, [f"S{i}" for i in range(1, 14)])
