"""Loading: hub id vs local directory, HF_HUB_OFFLINE, one-line ModelUnavailable, family inference,
revision recording, device and dtype choice. No network here: the hub is only ever read from a
local cache laid out as huggingface_hub lays it out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from guard.errors import BadInput, ModelUnavailable
from guard.models import device as device_mod
from guard.models.device import cpu_flags, pick_device, pick_dtype
from guard.models.llama_guard.runner import infer_family, load_llama_guard
from guard.models.loading import resolve_source
from guard.models.testing import vocab

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A random-init tiny Llama with the Llama Guard tokenizer, saved like a hub checkpoint (no
    ``guard_family`` in its config: the family must come from the name)."""
    out = tmp_path_factory.mktemp("tiny-lg")
    tokenizer = vocab.llama3_tokenizer(["User: hello there\n\nAgent: safe unsafe S1 S10\n\n"] * 20, vocab_size=400)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         eos_token_id=tokenizer.convert_tokens_to_ids(vocab.EOT))
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ----------------------------------------------------------------------------- unreachable weights


def test_missing_hub_model_offline_is_one_line_model_unavailable(offline):
    with pytest.raises(ModelUnavailable) as info:
        load_llama_guard("nobody-here/Llama-Guard-3-1B-missing", dtype="float32")
    message = info.value.message
    assert "\n" not in message
    assert "nobody-here/Llama-Guard-3-1B-missing" in message and "HF_HUB_OFFLINE" in message


def test_missing_hub_model_with_revision_names_it(offline):
    with pytest.raises(ModelUnavailable, match="revision 'v2'"):
        load_llama_guard("nobody-here/Llama-Guard-3-1B-missing", revision="v2", dtype="float32")


def test_cli_reports_unreachable_weights_in_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "guard", "check", "--llama-guard", "nobody-here/Llama-Guard-3-1B",
                           "--dtype", "float32", "hello"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model_unavailable" in lines[0] and "nobody-here/Llama-Guard-3-1B" in lines[0]


def test_missing_local_directory_is_model_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable, match="not a local directory"):
        load_llama_guard(str(tmp_path / "no" / "such" / "dir"))


@pytest.mark.parametrize("config", [{}, {"model_type": "llama"}], ids=["bad-config", "no-weights"])
def test_directory_without_a_model_is_model_unavailable(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnavailable, match="does not hold a loadable model") as info:
        load_llama_guard(str(tmp_path), family="llama-guard-3-1b", dtype="float32")
    assert "\n" not in info.value.message


def test_revision_on_a_local_directory_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="revision"):
        resolve_source(str(tmp_path), revision="main")


def test_offline_flag_means_local_files_only(offline):
    source = resolve_source("meta-llama/Llama-Guard-3-1B", revision="abc")
    assert source.pretrained_kwargs() == {"revision": "abc", "local_files_only": True}


# ----------------------------------------------------------------------------- successful loads


def test_local_directory_loads_and_records_model_info(tiny_dir):
    runner = load_llama_guard(str(tiny_dir), family="llama-guard-3-1b", dtype="float32", device="cpu")
    assert runner.info.model == str(tiny_dir)
    assert runner.info.revision is None
    assert (runner.info.family, runner.info.device, runner.info.dtype) == ("llama-guard-3-1b", "cpu", "float32")
    assert runner.family == "llama-guard-3-1b" and next(runner.model.parameters()).dtype == torch.float32


def test_family_is_required_when_nothing_names_it(tiny_dir):
    with pytest.raises(BadInput, match="--family"):
        load_llama_guard(str(tiny_dir), dtype="float32")


def test_family_from_config_guard_family(tiny_dir, tmp_path):
    config = json.loads((tiny_dir / "config.json").read_text())
    target = tmp_path / "renamed"
    target.mkdir()
    for item in tiny_dir.iterdir():
        (target / item.name).symlink_to(item)
    (target / "config.json").unlink()
    (target / "config.json").write_text(json.dumps({**config, "guard_family": "llama-guard-3-8b"}))
    assert load_llama_guard(str(target), dtype="float32").family == "llama-guard-3-8b"


def test_hub_id_from_offline_cache_records_commit_and_infers_family(tiny_dir, tmp_path):
    """Lay the checkpoint out as the hub cache does and load it by hub id with HF_HUB_OFFLINE=1, in a
    fresh process (huggingface_hub reads its cache location at import)."""
    cache = tmp_path / "hub"
    repo = cache / "models--acme--Llama-Guard-3-1B-tiny"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for item in tiny_dir.iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    code = ("from guard.models.llama_guard.runner import load_llama_guard;"
            "print(load_llama_guard('acme/Llama-Guard-3-1B-tiny', dtype='float32').info.model_dump_json())")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["model"] == "acme/Llama-Guard-3-1B-tiny"
    assert info["revision"] == COMMIT
    assert info["family"] == "llama-guard-3-1b"


@pytest.mark.parametrize("name,expected", [
    ("meta-llama/Llama-Guard-3-1B", "llama-guard-3-1b"),
    ("meta-llama/Llama-Guard-3-8B", "llama-guard-3-8b"),
    ("meta-llama/Llama-Guard-4-12B", "llama-guard-4"),
    ("/models/llama-guard-3-1b-int4", "llama-guard-3-1b"),
    ("meta-llama/Meta-Llama-Guard-2-8B", "llama-guard-2"),
])
def test_family_inferred_from_the_model_name(name, expected):
    assert infer_family(name, LlamaConfig()) == expected


def test_family_inferred_from_a_llama4_config():
    class Llama4Like:
        model_type = "llama4"

    assert infer_family("/srv/models/guard", Llama4Like()) == "llama-guard-4"


def test_explicit_family_wins_and_unknown_family_is_bad_input():
    assert infer_family("meta-llama/Llama-Guard-3-1B", LlamaConfig(), "llama-guard-3-8b") == "llama-guard-3-8b"
    with pytest.raises(BadInput, match="unknown Llama Guard family"):
        infer_family("x", LlamaConfig(), "llama-guard-9")


# ----------------------------------------------------------------------------- device and dtype


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert {"avx512_bf16", "avx2"} <= cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("native,expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: native)
    assert pick_dtype("auto", torch.device("cpu")) == expected


def test_this_cpu_gets_bf16_only_if_it_says_so():
    flags = cpu_flags()
    native = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    assert (pick_dtype("auto", torch.device("cpu")) == torch.bfloat16) == native


def test_explicit_dtypes_and_bad_names():
    assert pick_dtype("float16", torch.device("cpu")) == torch.float16
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(BadInput, match="unknown dtype"):
        pick_dtype("int3", torch.device("cpu"))


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(BadInput):
        pick_device("nonsense-device")
    if not torch.cuda.is_available():
        with pytest.raises(BadInput, match="no CUDA"):
            pick_device("cuda:0")
