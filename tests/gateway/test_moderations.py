"""POST /v1/moderations parsed by the official client, with real scores from the tiny guard."""

from __future__ import annotations

from guard.gateway.moderation import OPENAI_CATEGORIES


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
