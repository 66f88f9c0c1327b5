"""The configuration of holdouts, variants, conversion queries, consent provenance columns and the
unsubscribe link: each mistake named by campaign, field and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from outbound_pipeline.config import ConfigError, parse_config
from outbound_pipeline_tests.config_cases import SOURCE, minimal_config

PROMO_B = {
    "name": "promo_v2",
    "language": "fr",
    "category": "MARKETING",
    "header": "Offre {{1}}",
    "body": "{{1}}, code {{2}}, jusqu'au {{3}}.",
}


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, SOURCE)
    return str(caught.value)


def with_promo_b(**campaign: Any) -> dict[str, Any]:
    raw = minimal_config(**campaign)
    raw["templates"].append(PROMO_B)
    return raw


def test_a_valid_holdout_variants_and_conversion_query_load() -> None:
    config = parse_config(
        with_promo_b(
            holdout_percent=12.5,
            variants=[{"name": "a"}, {"name": "b", "template": "promo_v2", "weight": 2}],
            conversion_sql="SELECT customer_id FROM orders WHERE day > :partition_date",
        ),
        SOURCE,
    )
    campaign = config.campaign("promo")
    assert [(a.variant, a.template, a.weight) for a in campaign.arms()] == [
        ("a", "promo_v1", 1),
        ("b", "promo_v2", 2),
    ]
    assert campaign.variable_columns() == ["first_name", "code", "expires"]


@pytest.mark.parametrize(
    ("campaign", "expected"),
    [
        (
            {"holdout_percent": 100},
            "campaigns[promo].holdout_percent: Input should be less than 100",
        ),
        (
            {"holdout_percent": 0},
            "campaigns[promo].holdout_percent: Input should be greater than 0",
        ),
        (
            {"variants": [{"name": "a"}, {"name": "a", "template": "promo_v2"}]},
            "campaigns[promo].variants[a].name: variant names must be unique within a campaign",
        ),
        (
            {"variants": [{"name": "a", "weight": 0}]},
            "campaigns[promo].variants[a].weight: Input should be greater than 0",
        ),
        (
            {
                "variants": [
                    {"name": "a"},
                    {"name": "b", "template": "notice_v1", "language": "en_US"},
                ]
            },
            "campaigns[promo].variants[b].template: 'notice_v1' is UTILITY, the campaign's template "
            "'promo_v1' is MARKETING: variants of one campaign share its category",
        ),
        (
            {"variants": [{"name": "a", "template": "promo_v9"}]},
            "campaigns[promo].variants[a].template: no template 'promo_v9' in language 'fr'",
        ),
        (
            {"variants": [{"name": "a", "variables": {"body": {1: "first_name"}}}]},
            "campaigns[promo].variants[a].variables.body: template promo_v1/fr has 3 body "
            "placeholder(s); missing {{2}}, {{3}}",
        ),
        (
            {"variants": [{"name": "Big Letters"}]},
            "campaigns[promo].variants[Big Letters].name: String should match pattern",
        ),
        (
            {
                "variables": {
                    "header": {1: {"unsubscribe": "link"}},
                    "body": {1: "a", 2: "b", 3: "c"},
                }
            },
            "campaigns[promo].variables.header.1: an unsubscribe link or token is longer than a "
            "header parameter's 60 characters: put it in the body, or in a URL button",
        ),
        (
            {"variables": {"body": {1: {"unsubscribe": "link", "literal": "x"}}}},
            "give exactly one of 'column', 'literal' or 'unsubscribe'",
        ),
        (
            {"variables": {"body": {1: {"unsubscribe": "page"}}}},
            "campaigns[promo].variables.body.1.unsubscribe: Input should be 'link' or 'token'",
        ),
    ],
)
def test_each_mistake_names_campaign_field_and_fix(campaign: dict[str, Any], expected: str) -> None:
    assert expected in error_of(with_promo_b(**campaign))


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["status"], "consent_columns: 'status' is always recorded: list only the other columns"),
        (["id", "id"], "consent_columns: a column is listed twice"),
        (["id; DROP TABLE x"], "consent_columns: 'id; DROP TABLE x' is not a column name"),
    ],
)
def test_consent_columns_are_checked(columns: list[str], expected: str) -> None:
    raw = minimal_config()
    raw["consent_columns"] = columns
    assert expected in error_of(raw)
