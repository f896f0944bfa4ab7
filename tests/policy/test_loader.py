"""Loading policy files: shipped files, extends chains, file:line errors, hashes, attachments."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.errors import ConfigError, PolicyNotFound
from guard.policy import PolicyLoadError, load_policy_dir, load_policy_file, load_policy_files
from guard.policy.cases import load_cases
from guard.types import Action

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
FIXTURES = Path(__file__).parent / "fixtures"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def issues_of(call) -> list[str]:
    with pytest.raises(PolicyLoadError) as info:
        call()
    assert isinstance(info.value, ConfigError)
    return [str(i) for i in info.value.issues]


# --------------------------------------------------------------------------- shipped policies


def test_every_shipped_policy_validates_as_a_directory_and_one_by_one():
    files = sorted(POLICIES.glob("*.yaml"))
    assert {f.stem for f in files} >= {"default", "strict", "shadow"}
    policy_set = load_policy_dir(POLICIES, default_id="default")
    assert set(policy_set.policies) == {f.stem for f in files}
    for path in files:
        assert load_policy_file(path).id == path.stem
    for cases in sorted((POLICIES / "tests").glob("*.yaml")):
        assert load_cases(cases).cases, cases


def test_the_shipped_default_matches_the_issue():
    p = load_policy_dir(POLICIES).get("default")
    blocked = {c for c in ["S1", "S2", "S3", "S4", "S9", "S10", "S11", "S12"]}
    for code in blocked:
        for direction in ("input", "output"):
            assert p.rule(code, direction).action is Action.BLOCK, (code, direction)
    assert p.rule("S6", "input").action is Action.FLAG and p.rule("S8", "output").action is Action.FLAG
    assert p.prompt_injection.tool.injection is not None and p.prompt_injection.document.injection is not None
    assert p.prompt_injection.action is Action.BLOCK
    assert p.guards.llama_guard.on_error.input is Action.BLOCK and p.guards.prompt_guard.on_error.output is Action.BLOCK
    assert p.mode == "enforce"
    shadow = load_policy_dir(POLICIES).get("shadow")
    assert shadow.mode == "shadow" and shadow.categories == p.categories


def test_the_multi_tenant_examples_attach_and_chain():
    s = load_policy_dir(POLICIES, default_id="default")
    assert s.chains["tenant-kids"] == ("tenant-kids", "strict", "default")
    assert s.select(tenant="acme").id == "tenant-acme"
    assert s.select(api_key="kids-tablet-7").id == "tenant-kids"
    assert s.select(api_key="dev-alice", tenant="acme").id == "dev"
    assert s.select(tenant="nobody").id == "default"


# --------------------------------------------------------------------------- extends


def test_a_three_level_chain_merges_each_level_over_its_parent(tmp_path):
    write(tmp_path, "base.yaml", """
id: base
version: "5"
description: the base
refusal: base refusal
attach: {tenants: [t-base]}
categories:
  S1: {action: block, threshold: 0.5, message: base message}
  S6: {action: flag, threshold: 0.7}
context: {turns: 4}
""")
    write(tmp_path, "mid.yaml", """
extends: base
categories:
  S6: {action: block}
  S7: {action: redact, threshold: 0.6}
context: {roles: [user, assistant, tool]}
""")
    write(tmp_path, "leaf.yaml", """
extends: mid
version: "1"
categories:
  S1: {threshold: 0.2}
  S7: {output: {action: escalate}}
excluded_categories: [S13]
""")
    s = load_policy_dir(tmp_path)
    leaf = s.get("leaf")
    assert s.chains["leaf"] == ("leaf", "mid", "base")
    assert leaf.extends is None and leaf.id == "leaf" and leaf.version == "1"
    # leaf overrides the threshold, keeps base's action and message
    assert leaf.rule("S1", "input").model_dump() == {"action": Action.BLOCK, "threshold": 0.2, "message": "base message"}
    assert leaf.rule("S6", "input").action is Action.BLOCK and leaf.rule("S6", "input").threshold == 0.7
    assert leaf.rule("S7", "input").action is Action.REDACT and leaf.rule("S7", "output").action is Action.ESCALATE
    assert leaf.context.turns == 4 and leaf.context.roles == ["user", "assistant", "tool"]
    assert leaf.refusal == "base refusal"
    # id, version, description and attach are not inherited
    assert leaf.description == "" and leaf.attach.tenants == [] and s.get("mid").version == "1"
    assert s.get("base").rule("S1", "input").threshold == 0.5  # the parent is untouched
    assert len({s.get(i).content_hash for i in ("base", "mid", "leaf")}) == 3


def test_an_empty_mapping_clears_an_inherited_one_and_lists_replace(tmp_path):
    write(tmp_path, "base.yaml", "categories: {S1: {action: block}}\nexcluded_categories: [S5, S6]\n")
    write(tmp_path, "child.yaml", "extends: base\ncategories: {}\nexcluded_categories: [S7]\n")
    child = load_policy_dir(tmp_path).get("child")
    assert child.categories == {} and child.excluded_categories == ["S7"]


def test_unknown_parent_and_cycles_are_reported_at_the_extends_line(tmp_path):
    write(tmp_path, "a.yaml", "version: '1'\nextends: b\n")
    write(tmp_path, "b.yaml", "extends: a\n")
    write(tmp_path, "c.yaml", "# c\n\nextends: nowhere\n")
    issues = issues_of(lambda: load_policy_dir(tmp_path))
    assert f"{tmp_path / 'b.yaml'}:1: extends: cycle a -> b -> a" in issues, issues
    assert f"{tmp_path / 'a.yaml'}:2: extends: parent policy 'b' is invalid" in issues
    assert f"{tmp_path / 'c.yaml'}:3: extends: no policy 'nowhere' (known: a, b, c)" in issues


def test_validating_one_file_resolves_its_parent_from_the_same_directory(tmp_path):
    write(tmp_path, "base.yaml", "categories: {S1: {action: block}}\n")
    write(tmp_path, "other.yaml", "categories: {S99: {action: block}}\n")  # broken, unrelated
    child = write(tmp_path, "child.yaml", "extends: base\n")
    assert load_policy_file(child).rule("S1", "input").action is Action.BLOCK


# --------------------------------------------------------------------------- errors with lines


def test_an_unknown_category_code_is_an_error_with_file_and_line(tmp_path):
    path = write(tmp_path, "p.yaml", """
id: p
categories:
  S1: {action: block}
  S15: {action: block}
excluded_categories: [S2, Q7]
streaming:
  categories: {S99: hold_back}
""")
    issues = issues_of(lambda: load_policy_files([path]))
    assert issues == [
        f"{path}:4: categories.S15: unknown category code 'S15' (expected S1..S14 or a code declared in "
        "custom_categories)",
        f"{path}:5: excluded_categories.1: unknown category code 'Q7' (expected S1..S14 or a code declared "
        "in custom_categories)",
        f"{path}:7: streaming.categories.S99: unknown category code 'S99' (expected S1..S14 or a code "
        "declared in custom_categories)",
    ]


def test_a_custom_code_is_known_once_declared_and_may_not_shadow_a_hazard(tmp_path):
    path = write(tmp_path, "p.yaml", """
custom_categories:
  S3: {name: Mine}
  C1: {name: Account Takeover}
categories:
  C1: {action: escalate}
""")
    assert issues_of(lambda: load_policy_files([path])) == [
        f"{path}:2: custom_categories.S3: custom category 'S3' clashes with the hazard code S3 (Sex Crimes)"]


def test_the_broken_fixture_policies_are_reported_with_their_lines():
    code = FIXTURES / "broken-code.yaml"
    assert issues_of(lambda: load_policy_files([code])) == [
        f"{code}:7: categories.S21: unknown category code 'S21' (expected S1..S14 or a code declared in "
        "custom_categories)",
        f"{code}:10: guards.llama_guard.timeout: Extra inputs are not permitted",
    ]
    syntax = FIXTURES / "broken-syntax.yaml"
    (issue,) = issues_of(lambda: load_policy_files([syntax]))
    assert issue.startswith(f"{syntax}:5: invalid YAML:") and "started at line 4" in issue
    value = FIXTURES / "broken-value.yaml"
    issues = issues_of(lambda: load_policy_files([value]))
    assert [i.split(": ")[0] + ": " + i.split(": ")[1] for i in issues] == [
        f"{value}:4: categories.S1.action", f"{value}:8: categories.S2.threshold"]


def test_an_error_inherited_from_a_parent_names_the_parent_file():
    issues = issues_of(lambda: load_policy_files([FIXTURES / "child-of-broken.yaml"]))
    assert issues and all(i.startswith(f"{FIXTURES / 'broken-value.yaml'}:") for i in issues)


def test_missing_action_unknown_keys_and_duplicates_point_at_their_lines(tmp_path):
    path = write(tmp_path, "p.yaml", """
categories:
  S1:
    threshold: 0.4
mode: enforce
colour: blue
""")
    assert issues_of(lambda: load_policy_files([path])) == [
        f"{path}:2: categories.S1: no action for input and output: set `action` (or `input.action`)",
        f"{path}:5: colour: Extra inputs are not permitted",
    ]
    dup = write(tmp_path, "dup.yaml", "categories:\n  S1: {action: block}\n  S1: {action: allow}\n")
    assert issues_of(lambda: load_policy_files([dup])) == [f"{dup}:3: duplicate key 'S1'"]


def test_duplicate_ids_and_a_missing_default_are_errors(tmp_path):
    write(tmp_path, "a.yaml", "id: same\n")
    write(tmp_path, "b.yaml", "version: '2'\nid: same\n")
    assert issues_of(lambda: load_policy_dir(tmp_path)) == [
        f"{tmp_path / 'b.yaml'}:2: duplicate policy id 'same' (also in {tmp_path / 'a.yaml'})"]
    (tmp_path / "b.yaml").unlink()
    assert issues_of(lambda: load_policy_dir(tmp_path, default_id="default")) == [
        f"{tmp_path}: default policy 'default' not found"]
    with pytest.raises(PolicyNotFound):
        load_policy_dir(tmp_path).get("nope")


def test_the_same_exact_attachment_on_two_policies_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", "attach: {tenants: [acme]}\n")
    write(tmp_path, "b.yaml", "attach:\n  keys: [k1]\n  tenants: [other, acme]\n")
    assert issues_of(lambda: load_policy_dir(tmp_path)) == [
        f"{tmp_path / 'b.yaml'}:3: attach.tenants: 'acme' is already attached to policy 'a'"]


# --------------------------------------------------------------------------- hashes


def test_the_content_hash_ignores_formatting_and_follows_content(tmp_path):
    one = write(tmp_path, "one.yaml", "id: p\ncategories: {S1: {action: block, threshold: 0.5}}\nmode: enforce\n")
    other = tmp_path / "other"
    other.mkdir()
    two = write(other, "two.yaml", """
# comments and order do not matter
mode: enforce   # the default anyway
categories:
  S1:
    threshold: 0.50
    action: block
id: p
""")
    h1, h2 = load_policy_file(one).content_hash, load_policy_file(two).content_hash
    assert h1 == h2
    write(other, "two.yaml", "id: p\ncategories: {S1: {action: block, threshold: 0.51}}\n")
    assert load_policy_file(two).content_hash != h1


def test_a_copy_with_changes_gets_its_own_hash():
    p = load_policy_dir(POLICIES).get("default")
    changed = p.model_copy(update={"version": "99"})
    assert changed.content_hash != p.content_hash
    assert changed.content_hash == type(p).model_validate(changed.model_dump()).content_hash
