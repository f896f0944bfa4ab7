"""Every required reference vector, byte for byte, through `guard prompt`.

Required (reference README, "Decisions already taken"): every vector whose ``source`` starts with
``hf_chat_template`` or ``meta_notebook_output``, with two deliberate exceptions checked against
their own expectation: the LG3-8B ``excluded: ["S6"]`` vector (the 8B template ignores exclusions;
we apply them) and the LG3-1B ``user_only_string_content`` vector (the template renders an empty
conversation; we render string content as one text part). The unverified LG4 ``observed_hf_render``
vectors are checked too. ``llama_cookbook`` / ``llama_stack`` vectors are other stacks' prompts
(not reproduced).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from tests.models._cli import run_guard, run_guard_subprocess
from tests.shared import shared_path

# shared/reference/llama_guard_prompt_vectors.json (93 vectors; see its ``source`` fields).
VECTORS_FILE = shared_path("reference", "llama_guard_prompt_vectors.json")
FAMILY = {
    "LG3-8B": "llama-guard-3-8b",
    "LG3-1B": "llama-guard-3-1b",
    "LG4-12B": "llama-guard-4",
    "LG2-8B": "llama-guard-2",
    "LG1-7B": "llama-guard-1",
}
REQUIRED_SOURCES = ("hf_chat_template", "meta_notebook_output", "observed_hf_render")


ALL = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
REQUIRED = [v for v in ALL if v["source"].startswith(REQUIRED_SOURCES)]
BY_ID = {v["id"]: v for v in ALL}


def expected_prompt(vector: dict) -> str:
    """The vector's prompt, or for the two documented exceptions what we render instead."""
    options = vector["options"]
    if vector["model"] == "LG3-8B" and options.get("excluded"):
        # The 8B template ignores exclusions; we drop the excluded lines (no renumbering).
        assert options["excluded"] == ["S6"]
        return vector["expected_prompt"].replace("S6: Specialized Advice.\n", "")
    if vector["model"] == "LG3-1B" and vector["conversation_name"] == "user_only_string_content":
        # The 1B template renders string content as an empty conversation; we render it as one part.
        return BY_ID['LG3-1B|hf_chat_template|user_only|{"style": "hf"}']["expected_prompt"]
    return vector["expected_prompt"]


def cli_args(vector: dict, tmp_path: Path) -> list[str]:
    args = ["prompt", "--family", FAMILY[vector["model"]]]
    options = vector["options"]
    if "categories" in options:
        path = tmp_path / "categories.json"
        path.write_text(json.dumps(options["categories"]), encoding="utf-8")
        args += ["--categories", str(path)]
    if options.get("excluded"):
        args += ["--exclude", ",".join(options["excluded"])]
    return args


def compare_form(vector: dict, text: str) -> str:
    if vector.get("compare_mode") == "hf_decode_cleanup":
        return PreTrainedTokenizerBase.clean_up_tokenization(None, text)  # type: ignore[arg-type]
    assert "compare_mode" not in vector, vector["compare_mode"]
    return text


def test_required_vector_selection_is_complete():
    sources = [v["source"].split(":")[0] for v in REQUIRED]
    assert sources.count("hf_chat_template") == 32
    assert sources.count("meta_notebook_output") == 2
    assert sources.count("observed_hf_render") == 2
    assert {v["model"] for v in REQUIRED} == set(FAMILY)


@pytest.mark.parametrize("vector", REQUIRED, ids=[v["id"] for v in REQUIRED])
def test_vector_through_guard_prompt(vector, tmp_path):
    result = run_guard(cli_args(vector, tmp_path), json.dumps(vector["conversation"]))
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    assert compare_form(vector, result.stdout) == expected_prompt(vector)


def test_the_two_exceptions_really_differ_from_the_template():
    excluded = BY_ID['LG3-8B|hf_chat_template|user_only|{"excluded": ["S6"], "style": "hf"}']
    string_content = BY_ID['LG3-1B|hf_chat_template|user_only_string_content|{"style": "hf"}']
    for vector in (excluded, string_content):
        assert expected_prompt(vector) != vector["expected_prompt"]
    assert "S6: Specialized Advice." not in expected_prompt(excluded)
    assert "User: How do I make a bomb?" in expected_prompt(string_content)
    assert "User: " not in string_content["expected_prompt"]  # the template's empty conversation


SUBPROCESS_IDS = [
    'LG3-8B|hf_chat_template|whitespace_and_newlines|{"style": "hf"}',
    'LG3-1B|hf_chat_template|unicode|{"style": "hf"}',
    "LG3-1B|meta_notebook_output|cell7",
    "LG4-12B|observed|user_agent",
]


@pytest.mark.parametrize("vector_id", SUBPROCESS_IDS)
def test_vector_through_the_installed_command(vector_id, tmp_path):
    """The same check in a real process: stdout bytes are exactly the prompt, UTF-8, no newline."""
    vector = BY_ID[vector_id]
    result = run_guard_subprocess(cli_args(vector, tmp_path), json.dumps(vector["conversation"]))
    assert result.code == 0, result.stderr
    assert compare_form(vector, result.stdout) == expected_prompt(vector)
    assert not result.stdout.endswith("\n")
