"""Bad configuration fails loading with a message naming the file, the campaign or template and the
field: one table of cases (config_cases.py), each mutating a valid configuration in one place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from outbound_pipeline.config import BUNDLED_CONFIG, ConfigError, load_config, parse_config
from outbound_pipeline_tests.config_cases import BAD_CASES, SOURCE, minimal_config, portfolio_tiers


@pytest.mark.parametrize(
    ("mutate", "field", "phrase"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_configuration_names_the_field(
    mutate: Callable[[dict[str, Any]], None], field: str, phrase: str
) -> None:
    raw = minimal_config()
    parse_config(copy.deepcopy(raw), SOURCE)  # the base is valid: only the mutation can fail it
    mutate(raw)
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, SOURCE)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: invalid configuration"), message
    assert f"  {field}: " in message, message
    assert phrase in message, message
    assert "(top level)" not in message, message


def test_unknown_locale_for_a_formatted_variable_fails_loading() -> None:
    raw = minimal_config()
    raw["templates"][0]["language"] = "zz"
    raw["campaigns"][0]["language"] = "zz"
    with pytest.raises(
        ConfigError,
        match=r"campaigns\[promo\]\.variables\.body\.3: format 'date' needs a language babel knows",
    ):
        parse_config(raw, SOURCE)


def test_every_problem_is_reported_at_once() -> None:
    raw = minimal_config()
    raw["campaigns"][0]["template"] = "nope"
    raw["campaigns"][1]["variables"]["body"] = {}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, SOURCE)
    message = str(caught.value)
    assert "campaigns[promo].template: no template 'nope'" in message
    assert (
        "campaigns[notice].variables.body: template notice_v1/en_US has 1 body placeholder(s); missing {{1}}"
        in message
    )


def test_valid_values_are_normalised() -> None:
    raw = minimal_config(
        campaign_id="5DD2BE5A6AEB4EF28C8DC78D51E21ACF",
        phone_region="be",
        messaging_limit={"tier": 250},
        test_recipients=["0033 6 12 34 56 78"],
    )
    # The other campaign sends from the same number: one limit, one tier.
    raw["campaigns"][1]["messaging_limit"] = {"tier": "250"}
    raw["templates"][1]["header"] = "   "
    config = parse_config(raw, SOURCE)
    campaign = config.campaign("promo")
    assert campaign.campaign_id == "5dd2be5a-6aeb-4ef2-8c8d-c78d51e21acf"
    assert campaign.phone_region == "BE"
    assert campaign.messaging_limit.max_recipients == 250
    assert campaign.test_recipients == ["+33612345678"]
    # A blank header is no header: the body is the only component (32,768-character parameters).
    assert config.templates[1].header is None


def test_campaigns_under_different_limits_may_declare_different_tiers() -> None:
    raw = minimal_config(messaging_limit={"scope": "portfolio", "portfolio": "acme", "tier": "2K"})
    raw["campaigns"][1]["messaging_limit"] = {"scope": "sender", "tier": "unlimited"}
    config = parse_config(raw, SOURCE)
    assert [c.messaging_limit.max_recipients for c in config.campaigns] == [2_000, None]
    portfolio_tiers(raw, "2K", "2K")
    assert {c.limit_scope for c in parse_config(raw, SOURCE).campaigns} == {"portfolio:acme"}


def test_load_config_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="missing.yaml: cannot read the configuration file"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("templates: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="scalar.yaml: expected a mapping"):
        load_config(scalar)
    bad = tmp_path / "bad.yaml"
    raw = minimal_config()
    raw["campaigns"][0]["schedule"] = {"cron": "every day"}
    bad.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(
        ConfigError,
        match=r"bad.yaml: invalid configuration\n  campaigns\[promo\]\.schedule\.cron: 'every day'",
    ):
        load_config(bad)


def test_bundled_configuration_loads() -> None:
    config = load_config(BUNDLED_CONFIG)
    assert {c.key for c in config.campaigns} == {"order_ready", "winter_offers"}
