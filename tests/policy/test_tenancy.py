"""Which policy a request uses: explicit > key > tenant > route > default; exact > pattern."""

from __future__ import annotations

import pytest

from guard.errors import PolicyNotFound
from guard.policy import PolicySet

from tests.policy.helpers import policy


def policy_set(**attachments) -> PolicySet:
    policies = {pid: policy(id=pid, attach=attach) for pid, attach in attachments.items()}
    policies["default"] = policy(id="default")
    return PolicySet(policies=policies, default_id="default")


S = policy_set(
    by_key={"keys": ["key-1"]},
    by_key_glob={"keys": ["key-*"]},
    by_tenant={"tenants": ["acme"]},
    by_route={"routes": ["/v1/moderations"]},
    by_route_glob={"routes": ["/internal/*"]},
    longer_glob={"routes": ["/internal/admin/*"]},
)


@pytest.mark.parametrize("request_,expected", [
    ({}, "default"),
    ({"tenant": "unknown", "route": "/v1/chat/completions"}, "default"),
    ({"api_key": "key-1", "tenant": "acme", "route": "/v1/moderations"}, "by_key"),
    ({"api_key": "key-2", "tenant": "acme"}, "by_key_glob"),
    ({"api_key": "other", "tenant": "acme", "route": "/v1/moderations"}, "by_tenant"),
    ({"tenant": "other", "route": "/v1/moderations"}, "by_route"),
    ({"route": "/internal/x"}, "by_route_glob"),
    ({"route": "/internal/admin/x"}, "longer_glob"),
    ({"requested": "by_route", "api_key": "key-1"}, "by_route"),
])
def test_precedence(request_, expected):
    assert S.select(**request_).id == expected


def test_a_requested_policy_must_exist_and_ties_go_to_the_first_id():
    with pytest.raises(PolicyNotFound):
        S.select(requested="missing")
    tie = policy_set(b={"keys": ["k-*"]}, a={"keys": ["k*-"]})
    assert tie.select(api_key="k--").id == "a"
