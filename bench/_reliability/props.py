"""Property fuzzers of the two parsers that take outside input first: the policy loader (operator
files) and the message normaliser (every request).

* ``fuzz_policy_loader``: random policy directories (schema-shaped documents, mutated shipped
  policies, raw and corrupted YAML text, ``extends`` chains and cycles) -> ``load_policy_dir``
  either loads or raises ``ConfigError``; a loaded policy then plans and decides on a sample
  conversation raising nothing but ``BadInput``.
* ``fuzz_messages``: random JSON values shaped like chat messages -> ``parse_messages`` returns
  messages (one per input item, valid roles, text that is valid Unicode) or raises ``BadInput``.

Each returns a ``Tally``; ``strict=True`` (the tests) raises on the first unexpected outcome so that
hypothesis shrinks it to a minimal example.
"""

from __future__ import annotations

import copy
import functools
import tempfile
import traceback
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench._reliability.stats import Tally
from guard.errors import BadInput, ConfigError
from guard.messages import parse_messages
from guard.policy import Policy, decide, load_policy_dir, plan_checks
from guard.types import GuardResults, LlamaGuardResult, Message, ModelInfo, PromptGuardResult

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "policies"

ACTIONS = ["allow", "flag", "redact", "escalate", "block"]
CODES = [f"S{i}" for i in range(1, 16)] + ["C1", "C2", "S0", "s1", "X1"]
ENUM_WORDS = ACTIONS + [
    "enforce", "shadow", "hold_back", "stream_first", "all", "window", "latest_turn", "full",
    "redacted", "none", "content_filter", "error", "input", "output", "user", "tool", "assistant",
    "system", "document", "llama_guard", "prompt_guard", "default", "*", "document:*",
]
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
PLAIN_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)


def _schema_keys() -> list[str]:
    schema = Policy.model_json_schema()
    keys = set(schema.get("properties", {}))
    for definition in schema.get("$defs", {}).values():
        keys |= set(definition.get("properties", {}))
    return sorted(keys)


SCHEMA_KEYS = _schema_keys()
TOP_KEYS = sorted(Policy.model_fields)


def _leaf() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), PLAIN_TEXT,
        st.sampled_from(ENUM_WORDS + CODES), st.floats(-0.5, 1.5),
    )


_KEY = st.one_of(st.sampled_from(SCHEMA_KEYS + CODES), PLAIN_TEXT)
VALUES = st.recursive(_leaf(), lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(_KEY, inner, max_size=5)),
                      max_leaves=20)
IDS = st.one_of(st.sampled_from(["a", "b", "c", "default"]), PLAIN_TEXT)


def _rule() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({}, optional={
        "action": st.one_of(st.sampled_from(ACTIONS), VALUES), "threshold": st.one_of(st.floats(-1, 2), VALUES),
        "message": st.one_of(PLAIN_TEXT, VALUES), "input": VALUES, "output": VALUES})


def _policy_doc() -> st.SearchStrategy[dict[str, Any]]:
    typed = {
        "id": IDS, "extends": st.one_of(IDS, VALUES), "mode": st.one_of(st.sampled_from(["enforce", "shadow"]), VALUES),
        "categories": st.one_of(st.dictionaries(st.sampled_from(CODES), st.one_of(_rule(), VALUES), max_size=4), VALUES),
        "other_categories": st.one_of(_rule(), VALUES),
    }
    optional = {key: typed.get(key, VALUES) for key in TOP_KEYS}
    return st.fixed_dictionaries({}, optional=optional)


@functools.cache
def _shipped_docs() -> tuple[dict[str, Any], ...]:
    return tuple(yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(SHIPPED.glob("*.yaml")))


@st.composite
def _mutated_shipped(draw: st.DrawFn) -> dict[str, Any]:
    """A shipped policy with a few random edits at random depths (replace, delete, add a key)."""
    doc = draw(st.sampled_from(_shipped_docs()))
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 4))):
        node: Any = doc
        for _depth in range(draw(st.integers(0, 3))):
            if isinstance(node, dict) and node:
                child = node[draw(st.sampled_from(sorted(node, key=str)))]
                if isinstance(child, (dict, list)):
                    node = child
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node, key=str)))
            edit = draw(st.sampled_from(["replace", "delete", "add"]))
            if edit == "replace":
                node[key] = draw(VALUES)
            elif edit == "delete":
                del node[key]
            else:
                node[draw(_KEY)] = draw(VALUES)
        elif isinstance(node, list):
            node.append(draw(VALUES))
    return doc


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_DUMPER, allow_unicode=True, sort_keys=False)


@st.composite
def _valid_edits(draw: st.DrawFn) -> dict[str, Any]:
    """A shipped policy with edits that keep it (mostly) valid: the loaded path gets exercised."""
    doc = copy.deepcopy(draw(st.sampled_from(_shipped_docs())))
    doc.pop("extends", None)
    doc.pop("attach", None)
    codes = draw(st.lists(st.sampled_from(CODES[:14]), max_size=4))
    categories = {c: {"action": "flag", **rule} for c, rule in (doc.get("categories") or {}).items()}
    doc["categories"] = {**categories, **{
        c: {"action": draw(st.sampled_from(ACTIONS)), "threshold": draw(st.floats(0, 1))} for c in codes}}
    doc["mode"] = draw(st.sampled_from(["enforce", "shadow"]))
    doc["context"] = {"turns": draw(st.one_of(st.none(), st.integers(0, 5))),
                      "roles": ["user", *draw(st.lists(st.sampled_from(["assistant", "tool", "system"]),
                                                        max_size=3, unique=True))]}
    doc["prompt_injection"] = {"scope": draw(st.sampled_from(["all", "window", "latest_turn"])),
                               "user": {"jailbreak": draw(st.one_of(st.none(), st.floats(0, 1)))}}
    doc["guards"] = {"llama_guard": {"on_error": draw(st.sampled_from(ACTIONS)),
                                     "directions": draw(st.lists(st.sampled_from(["input", "output"]),
                                                                 max_size=2, unique=True))}}
    return doc


@st.composite
def _corrupted(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few characters replaced, deleted or inserted (YAML syntax edges)."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        if not chars:
            break
        at = draw(st.integers(0, len(chars) - 1))
        edit = draw(st.sampled_from(["replace", "delete", "insert"]))
        piece = draw(st.sampled_from(list(":-{}[]&*!|>'\"#%@`\t\n ") + ["\x00", "\ufeff", "\u2028"]))
        if edit == "replace":
            chars[at] = piece
        elif edit == "delete":
            del chars[at]
        else:
            chars.insert(at, piece)
    return "".join(chars)


@st.composite
def policy_file_text(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["schema", "valid", "mutated", "corrupted", "raw", "alias"]))
    if kind == "valid":
        return _dump(draw(_valid_edits()))
    if kind == "schema":
        return _dump(draw(_policy_doc()))
    if kind == "mutated":
        return _dump(draw(_mutated_shipped()))
    if kind == "corrupted":
        return draw(_corrupted(_dump(draw(_mutated_shipped()))))
    if kind == "alias":  # anchors, merge keys and (recursive) aliases
        return draw(st.sampled_from([
            "id: a\ncategories: &c {S1: *c}\n", "a: &a [*a]\n", "base: &b {action: block}\ncategories: {S1: *b}\n",
            "categories:\n  S1: &r {action: block}\n  S2: {<<: *r, threshold: 0.2}\n",
            "x: &x [1, 2]\ny: &y [*x, *x, *x, *x, *x, *x, *x, *x]\nz: &z [*y, *y, *y, *y, *y, *y, *y, *y]\n"
            "w: &w [*z, *z, *z, *z, *z, *z, *z, *z]\nv: [*w, *w, *w, *w, *w, *w, *w, *w]\n",
        ]))
    return draw(st.text(max_size=200))


POLICY_DIRS = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "default", "x.y"]), policy_file_text()),
                       min_size=1, max_size=3, unique_by=lambda f: f[0])

INFO = ModelInfo(model="fuzz", family="llama-guard-3-1b")
SAMPLE = [
    Message(role="system", content="be nice"), Message(role="user", content="hello"),
    Message(role="assistant", content="hi"), Message(role="tool", content="42"),
    Message(role="system", name="document:kb", content="retrieved"), Message(role="user", content="and?"),
]


def _results(policy: Policy, plan: Any) -> GuardResults:
    codes = sorted(policy.known_codes) if hasattr(policy, "known_codes") else CODES[:14]
    lg = LlamaGuardResult(model=INFO, unsafe_score=0.7, unsafe_score_pair=0.7, categories=codes[:1],
                          category_scores={c: 0.7 for c in codes}, output="unsafe")
    pg = [PromptGuardResult(model=INFO, jailbreak_score=0.95, injection_score=0.95, source=s.request.source,
                            message_index=s.message_index) for s in plan.prompt_guard]
    return GuardResults(llama_guard=lg, prompt_guard=pg, errors={"prompt_guard": "timeout: x"} if not pg else {})


def check_policy_dir(files: list[tuple[str, str]]) -> str:
    """The outcome of loading ``files`` ("loaded" or "rejected"); raises on anything else."""
    with tempfile.TemporaryDirectory(prefix="guard-policy-fuzz-") as tmp:
        for stem, text in files:
            Path(tmp, f"{stem}.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            policy_set = load_policy_dir(tmp)
        except ConfigError:
            return "rejected"
    for policy in policy_set.policies.values():
        policy.content_hash  # noqa: B018 - canonical JSON must serialise whatever loaded
        for direction in ("input", "output"):
            try:
                plan = plan_checks(policy, SAMPLE if direction == "input" else [*SAMPLE, SAMPLE[2]], direction)
            except BadInput:
                continue
            decide(policy, direction, _results(policy, plan))
    return "loaded"


# --------------------------------------------------------------------------- messages

_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), PLAIN_TEXT),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(PLAIN_TEXT, inner, max_size=3)), max_leaves=10)
MESSAGE_TEXT = st.one_of(PLAIN_TEXT, st.text(st.one_of(st.characters(), SURROGATES), max_size=12),
                         st.sampled_from(["", " ", "<|eot_id|>", "\u200b", "\x00"]))
_PART = st.one_of(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "Text", ""]),
                                         "text": st.one_of(MESSAGE_TEXT, _JSON)}), _JSON)
_CALL = st.one_of(st.fixed_dictionaries({}, optional={
    "id": _JSON, "type": st.sampled_from(["function", "x"]),
    "function": st.one_of(st.fixed_dictionaries({}, optional={"name": st.one_of(MESSAGE_TEXT, _JSON),
                                                               "arguments": st.one_of(MESSAGE_TEXT, _JSON)}),
                          _JSON)}), _JSON)
_MESSAGE = st.one_of(st.fixed_dictionaries({}, optional={
    "role": st.one_of(st.sampled_from(["user", "assistant", "system", "tool", "developer", "function", "User", ""]),
                      _JSON),
    "content": st.one_of(MESSAGE_TEXT, st.lists(_PART, max_size=3), st.none(), _JSON),
    "name": st.one_of(MESSAGE_TEXT, _JSON),
    "tool_calls": st.one_of(st.lists(_CALL, max_size=3), _JSON),
    "tool_call_id": _JSON,
}), _JSON)
_VALID_PART = st.fixed_dictionaries({"type": st.just("text"), "text": MESSAGE_TEXT})
_MOSTLY_VALID = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer"])},
    optional={"content": st.one_of(MESSAGE_TEXT, st.lists(_VALID_PART, max_size=3), st.none()),
              "name": MESSAGE_TEXT, "tool_calls": st.lists(_CALL, max_size=2)})
RAW_MESSAGES = st.one_of(st.lists(_MOSTLY_VALID, min_size=1, max_size=5),
                         st.lists(st.one_of(_MOSTLY_VALID, _MESSAGE), max_size=5), _JSON)
ROLES = {"system", "user", "assistant", "tool"}


def check_messages(raw: Any) -> str:
    """``parse_messages`` outcome ("ok" / "rejected"); raises AssertionError on a broken invariant."""
    try:
        messages = parse_messages(raw)
    except BadInput as error:
        assert error.message, "BadInput without a message"
        return "rejected"
    assert isinstance(raw, list) and len(messages) == len(raw), "one message per input item"
    for message in messages:
        assert message.role in ROLES, f"role {message.role!r}"
        message.text.encode("utf-8")  # UnicodeEncodeError = invalid text reached the models
        if message.name is not None:
            message.name.encode("utf-8")
    return "ok"


# --------------------------------------------------------------------------- runners


def _run(name: str, strategy: st.SearchStrategy[Any], check: Any, examples: int, *, strict: bool,
         seed: int | None) -> Tally:
    tally = Tally(name)

    @settings(max_examples=examples, database=None, deadline=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(strategy)
    def prop(value: Any) -> None:
        try:
            tally.add(check(value))
        except Exception as error:  # noqa: BLE001 - the finding itself
            tally.fail(f"{type(error).__name__}: {error} <- {value!r:.300}\n"
                       f"{''.join(traceback.format_exception(error)[-3:])}")
            if strict:
                raise

    if seed is not None:
        from hypothesis import seed as hypothesis_seed

        prop = hypothesis_seed(seed)(prop)
    prop()
    return tally


def fuzz_policy_loader(examples: int, *, strict: bool = False, seed: int | None = None) -> Tally:
    return _run("policy loader", POLICY_DIRS, check_policy_dir, examples, strict=strict, seed=seed)


def fuzz_messages(examples: int, *, strict: bool = False, seed: int | None = None) -> Tally:
    return _run("message normaliser", RAW_MESSAGES, check_messages, examples, strict=strict, seed=seed)
