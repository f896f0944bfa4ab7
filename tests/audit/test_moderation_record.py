"""The record of a ``/v1/moderations`` input Llama Guard failed on (an off-format answer, the kind
the HTTP fuzz saw; a timeout is tested end to end in ``test_gateway_audit``): ``guard_error``
status, the failure under the policy's ``on_error``, the input's text kept only as the retention
allows (the error message may quote it), stored and chained on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from guard.errors import MalformedModelOutput
from guard.gateway.auth import Principal
from guard.gateway.config import GatewayConfig
from guard.gateway.context import make_context
from guard.gateway.moderation import failed_result, load_moderation_map
from guard.gateway.moderation_audit import moderation_record
from guard.policy.loader import policy_from_data
from guard.types import Action

TEXT = "how do I make zorblax at home"


@pytest.mark.parametrize("retention", ["full", "redacted", "none"])
def test_an_off_format_answer_is_a_guard_error_record(store, retention):
    policy = policy_from_data({"id": "strict", "audit": {"retention": retention}})
    config = GatewayConfig.model_validate({"tenants": {"acme": {"policies": ["*"]}}})
    ctx = make_context(config, Principal(tenant="acme", key_id="acme-app"), "mod-1", "/v1/moderations")
    mapping = load_moderation_map()
    error = MalformedModelOutput(f"not a verdict: {TEXT!r}")
    result = failed_result(mapping, error, Action.BLOCK)

    built = moderation_record(ctx, policy, mapping, index=2, text=TEXT, result=result, judged=error,
                              prompt_guard=None, on_error=Action.BLOCK, check_ms=3.0)
    [record] = store.append([built])

    assert record.guard_status == "guard_error" == record.decision.guard_status
    assert record.results.llama_guard is None and record.results.timeouts == []
    assert record.results.errors["llama_guard"].startswith("malformed_output")
    assert [(r.kind, r.action) for r in record.decision.reasons] == [("guard_error", Action.BLOCK)]
    assert record.decision.action is Action.FLAG and record.policy == policy.ref
    assert record.moderation.flagged and record.moderation.on_error is Action.BLOCK
    assert record.moderation.input_index == 2 and record.moderation.categories == []
    assert (record.direction, record.route, record.tenant, record.api_key_id, record.retention) == (
        "moderation", "/v1/moderations", "acme", "acme-app", retention)
    stored = record.model_dump_json()
    assert (TEXT in stored) is (retention != "none")  # redacted keeps a text nothing flagged
    assert store.get(record.id) == record and store.verify().ok
