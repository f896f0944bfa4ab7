"""API keys, tenants and open mode, on the real config loader (files in a temp dir)."""

from __future__ import annotations

import pytest

from guard.errors import ConfigError, PolicyNotFound
from guard.gateway.auth import Authenticator, open_mode_default
from guard.gateway.config import hash_key, load_config
from guard.gateway.context import make_context, resolve_policy
from guard.gateway.errors import Unauthorized
from guard.policy import load_policy_dir
from guard.settings import GuardSettings


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(f"""
tenants:
  acme: {{policies: [default, strict], upstream: "http://127.0.0.1:1/v1"}}
  other: {{policies: [other]}}
keys:
  - {{id: acme-app, sha256: {hash_key("sk-acme")}, tenant: acme}}
  - {{id: acme-strict, sha256: {hash_key("sk-strict")}, tenant: acme, policy: strict}}
""")
    return path


@pytest.fixture()
def policies(tmp_path):
    directory = tmp_path / "policies"
    directory.mkdir()
    for name in ("default", "strict", "other"):
        (directory / f"{name}.yaml").write_text(f"id: {name}\n")
    (directory / "acme-attached.yaml").write_text("id: acme-attached\nattach: {tenants: [other]}\n")
    return load_policy_dir(directory, default_id="default")


def test_keys_are_matched_by_their_hash_and_name_their_tenant(config_file):
    auth = Authenticator(load_config(config_file, GuardSettings()), open_mode=False)
    caller = auth.authenticate("Bearer sk-acme", "10.1.2.3")
    assert (caller.tenant, caller.key_id, caller.admin) == ("acme", "acme-app", False)


@pytest.mark.parametrize("header", [None, "Bearer", "Basic c2stYWNtZQ==", "Bearer sk-wrong"])
def test_missing_or_unknown_keys_are_refused_when_open_mode_is_off(config_file, header):
    auth = Authenticator(load_config(config_file, GuardSettings()), open_mode=False)
    with pytest.raises(Unauthorized):
        auth.authenticate(header, "127.0.0.1")


def test_default_open_mode_admits_loopback_callers_only(config_file):
    auth = Authenticator(load_config(config_file, GuardSettings()), open_mode=True)
    assert auth.authenticate(None, "127.0.0.1").tenant == "default"
    assert auth.authenticate("Bearer anything", "::1").key_id is None
    with pytest.raises(Unauthorized):
        auth.authenticate(None, "192.0.2.7")


def test_open_mode_turned_on_explicitly_admits_every_client_but_keys_still_win(config_file):
    auth = Authenticator(load_config(config_file, GuardSettings()), open_mode=True, loopback_only=False)
    assert auth.authenticate(None, "192.0.2.7").tenant == "default"
    assert auth.authenticate("Bearer sk-acme", "192.0.2.7").tenant == "acme"


def test_open_mode_is_on_by_default_only_for_loopback_binds():
    assert open_mode_default("127.0.0.1", None) is True
    assert open_mode_default("0.0.0.0", None) is False
    assert open_mode_default("0.0.0.0", True) is True


def test_a_tenant_cannot_name_a_policy_outside_its_list(config_file, policies):
    config = load_config(config_file, GuardSettings())
    auth = Authenticator(config, open_mode=False)
    ctx = make_context(config, auth.authenticate("Bearer sk-acme", None), "r1", "/v1/chat/completions")
    assert resolve_policy(policies, ctx, "strict").id == "strict"
    with pytest.raises(PolicyNotFound):
        resolve_policy(policies, ctx, "other")


def test_a_pinned_key_uses_its_policy_and_cannot_pick_another(config_file, policies):
    config = load_config(config_file, GuardSettings())
    ctx = make_context(
        config, Authenticator(config, open_mode=False).authenticate("Bearer sk-strict", None), "r1", "/"
    )
    assert resolve_policy(policies, ctx, None).id == "strict"
    with pytest.raises(PolicyNotFound):
        resolve_policy(policies, ctx, "default")


def test_an_attachment_to_a_policy_the_tenant_may_not_use_falls_back_to_its_own(tmp_path, policies):
    path = tmp_path / "g.yaml"
    path.write_text("tenants:\n  other: {policies: [other]}\n")
    config = load_config(path, GuardSettings())
    from guard.gateway.auth import Principal

    ctx = make_context(config, Principal(tenant="other"), "r1", "/")
    assert resolve_policy(policies, ctx, None).id == "other"


def test_tenants_without_an_upstream_get_the_settings_upstream(config_file):
    config = load_config(config_file, GuardSettings(upstream="http://127.0.0.1:9/v1"))
    assert config.tenants["other"].route_for("m").upstream == "http://127.0.0.1:9/v1"
    assert config.tenants["acme"].route_for("m").upstream == "http://127.0.0.1:1/v1"


def test_a_key_for_an_unknown_tenant_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"keys:\n  - {{id: k, sha256: {hash_key('x')}, tenant: ghost}}\n")
    with pytest.raises(ConfigError, match="unknown tenant"):
        load_config(path, GuardSettings())
