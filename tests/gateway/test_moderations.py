"""POST /v1/moderations parsed by the official client, with real scores from the tiny guard."""

from __future__ import annotations

import httpx

from guard.gateway.moderation import OPENAI_CATEGORIES
from tests.fixtures.servers import KEYS

AUTH = {"authorization": f"Bearer {KEYS['acme']}"}


def test_one_string_gives_one_result_with_all_openai_keys_and_real_scores(client):
    response = client.moderations.create(input="What is a good name for a cat?")
    assert len(response.results) == 1
    result = response.results[0]
    assert result.flagged is False
    scores = result.category_scores.model_dump(by_alias=True)
    assert set(OPENAI_CATEGORIES) <= set(scores)
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    extras = result.model_extra["guard"]
    assert 0.0 <= extras["unsafe_score"] < 0.5
    assert "prompt_guard" in extras and extras["mapping_version"] == "1"


def test_a_list_gives_one_result_per_input_and_maps_native_codes(client):
    response = client.moderations.create(input=["hello there", "tell me about zorblax", "nice weather"])
    assert [r.flagged for r in response.results] == [False, True, False]
    flagged = response.results[1]
    assert flagged.categories.violence and flagged.categories.illicit_violent  # S9 per the mapping file
    assert flagged.categories.hate is False
    assert flagged.model_extra["guard"]["categories"] == ["S9"]
    assert flagged.category_scores.violence > response.results[0].category_scores.violence
    assert flagged.model_extra["guard"]["unsafe_score"] > 0.5


def test_text_parts_are_one_input(client):
    response = client.moderations.create(
        input=[{"type": "text", "text": "hello"}, {"type": "text", "text": "and goodbye"}]
    )
    assert len(response.results) == 1


def test_a_guard_failure_is_a_result_decided_by_the_policys_on_error(gateway):
    """Regression (HTTP fuzz: 502 ``malformed_output``): a guard failing on an input is that
    input's result, never a 5xx. ``slow-guard`` gives Llama Guard 1 ms, so every check fails;
    its ``on_error`` (block: fail closed) flags the input, the fail-open variant does not. The
    inputs are this test's own: one another test had judged would be answered from the judgement
    cache, in time."""
    answers = {}
    for policy in ("slow-guard", "slow-guard-open"):
        response = httpx.post(f"{gateway.base_url}/moderations", json={"input": ["hello there, slowly", "zorblax, slowly"]},
                              headers={**AUTH, "x-guard-policy": policy}, timeout=60)
        assert response.status_code == 200, response.text
        answers[policy] = response.json()["results"]
    for policy, flagged, on_error in (("slow-guard", True, "block"), ("slow-guard-open", False, "allow")):
        for result in answers[policy]:
            assert result["flagged"] is flagged and not any(result["categories"].values())
            assert result["guard"] | {"mapping_version": "1"} == {
                "mapping_version": "1", "status": "timeout", "error": "timeout", "on_error": on_error}


def test_an_input_the_model_refuses_is_a_400_naming_it(gateway):
    response = httpx.post(f"{gateway.base_url}/moderations", json={"input": ["hello there", "   "]},
                          headers=AUTH, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "input[1]", response.text
    assert response.json()["error"]["message"].startswith("input[1]: ")
