"""Configurations for tests: a minimal valid one (`minimal_config`), and the table of bad cases, each
mutating it in one place, with the field the error must name and a phrase it must hold.

Used by test_config.py and by the tests that need a configuration of their own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

SOURCE = "campaigns.yaml"


def minimal_config(**campaign: Any) -> dict[str, Any]:
    """A valid configuration: one template with a header and a body, one campaign using it."""
    base: dict[str, Any] = {
        "templates": [
            {
                "name": "promo_v1",
                "language": "fr",
                "category": "MARKETING",
                "header": "Offre {{1}}",
                "body": "Bonjour {{1}}, votre code {{2}} expire le {{3}}.",
            },
            {
                "name": "notice_v1",
                "language": "en_US",
                "category": "UTILITY",
                "body": "Hello {{1}}",
            },
        ],
        "campaigns": [
            {
                "key": "promo",
                "campaign_id": "5dd2be5a-6aeb-4ef2-8c8d-c78d51e21acf",
                "sender": "+33644646081",
                "template": "promo_v1",
                "language": "fr",
                "consent_category": "offers",
                "audience_sql": "SELECT customer_id, phone, first_name, code, expires FROM audience_rows",
                "variables": {
                    "header": {1: {"literal": "d'hiver"}},
                    "body": {
                        1: "first_name",
                        2: "code",
                        3: {"column": "expires", "format": "date"},
                    },
                },
                "start_date": dt.date(2026, 1, 1),
                **campaign,
            },
            {
                "key": "notice",
                "campaign_id": "0b6f3c1e-4a7d-4f0e-9a39-2c8e5d71b4a2",
                "sender": "+33644646081",
                "template": "notice_v1",
                "language": "en_US",
                "consent_category": "updates",
                "audience_sql": "SELECT customer_id, phone, first_name FROM audience_rows",
                "variables": {"body": {1: "first_name"}},
                "start_date": dt.date(2026, 1, 1),
            },
        ],
    }
    return base


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting a dotted path ('campaigns.0.schedule.cron'); value DELETE removes it."""

    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(_key(part), {})
        if value is DELETE:
            del node[_key(last)]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[_key(last)] = value

    return mutate


def _key(part: str) -> Any:
    return int(part) if part.isdigit() else part


DELETE = object()


def portfolio_tiers(raw: dict[str, Any], *tiers: str) -> None:
    """Put the campaigns, in order, in portfolio 'acme' with these tiers."""
    for campaign, tier in zip(raw["campaigns"], tiers, strict=True):
        campaign["messaging_limit"] = {"scope": "portfolio", "portfolio": "acme", "tier": tier}


# (case id, mutation, the field path the message must name, a phrase the message must hold)
BAD_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    (
        "uuid",
        _set("campaigns.0.campaign_id", "5dd2be5a-6aeb-4ef2-8c8d"),
        "campaigns[promo].campaign_id",
        "is not a UUID",
    ),
    (
        "uuid_number",
        _set("campaigns.0.campaign_id", 12345),
        "campaigns[promo].campaign_id",
        "is not a UUID",
    ),
    (
        "cron",
        _set("campaigns.0.schedule.cron", "61 9 * * *"),
        "campaigns[promo].schedule.cron",
        "not a valid cron",
    ),
    (
        "cron_fields",
        _set("campaigns.1.schedule.cron", "0 9 * *"),
        "campaigns[notice].schedule.cron",
        "not a valid cron",
    ),
    (
        "timezone",
        _set("campaigns.0.schedule.timezone", "Europe/Pariss"),
        "campaigns[promo].schedule.timezone",
        "IANA timezone",
    ),
    (
        "timezone_host",
        _set("campaigns.0.schedule.timezone", "localtime"),
        "campaigns[promo].schedule.timezone",
        "IANA timezone",
    ),
    (
        "quiet_timezone",
        _set("campaigns.0.quiet_hours", {"timezone": "Mars/Olympus"}),
        "campaigns[promo].quiet_hours.timezone",
        "IANA timezone",
    ),
    (
        "date_range",
        _set("campaigns.0.end_date", dt.date(2025, 12, 31)),
        "campaigns[promo].end_date",
        "before start_date",
    ),
    (
        "date_value",
        _set("campaigns.0.start_date", "2026-02-30"),
        "campaigns[promo].start_date",
        "valid date",
    ),
    (
        "date_missing",
        _set("campaigns.0.start_date", DELETE),
        "campaigns[promo].start_date",
        "is required",
    ),
    (
        "tier",
        _set("campaigns.0.messaging_limit", {"tier": "5K"}),
        "campaigns[promo].messaging_limit.tier",
        "not a tier",
    ),
    (
        "portfolio",
        _set("campaigns.0.messaging_limit", {"scope": "portfolio"}),
        "campaigns[promo].messaging_limit.portfolio",
        "needs 'portfolio",
    ),
    # Both campaigns send from one number under scope sender: one limit, so one tier.
    (
        "tier_shared_sender",
        _set("campaigns.1.messaging_limit", {"tier": "unlimited"}),
        "campaigns[notice].messaging_limit.tier",
        "'unlimited' differs from campaigns[promo]'s '1K', though both count under the same sender",
    ),
    (
        "tier_shared_portfolio",
        lambda raw: portfolio_tiers(raw, "2K", "10K"),
        "campaigns[notice].messaging_limit.tier",
        "though both count under portfolio 'acme'; campaigns that share a messaging limit must declare the same tier",
    ),
    (
        "region",
        _set("campaigns.0.phone_region", "XX"),
        "campaigns[promo].phone_region",
        "not a phone region",
    ),
    (
        "sender_national",
        _set("campaigns.0.sender", "0644646081"),
        "campaigns[promo].sender",
        "E.164",
    ),
    (
        "sender_unquoted",
        _set("campaigns.0.sender", 33644646081),
        "campaigns[promo].sender",
        "quote it",
    ),
    (
        "test_recipient",
        _set("campaigns.0.test_recipients", ["+3361234"]),
        "campaigns[promo].test_recipients",
        "not a valid E.164",
    ),
    ("key", _set("campaigns.0.key", "Promo-Fr"), "campaigns[Promo-Fr].key", "should match pattern"),
    ("key_repeated", _set("campaigns.1.key", "promo"), "campaigns[promo].key", "unique"),
    (
        "unknown_field",
        _set("campaigns.0.sendr", "x"),
        "campaigns[promo].sendr",
        "not a known field",
    ),
    (
        "policy",
        _set("campaigns.0.parameter_policy", "fix"),
        "campaigns[promo].parameter_policy",
        "'skip' or 'clean'",
    ),
    (
        "rate",
        _set("campaigns.0.max_send_rate", 5000),
        "campaigns[promo].max_send_rate",
        "less than or equal to 1000",
    ),
    (
        "consent_blank",
        _set("campaigns.0.consent_category", "  "),
        "campaigns[promo].consent_category",
        "at least 1 character",
    ),
    (
        "unknown_template",
        _set("campaigns.0.template", "promo_v9"),
        "campaigns[promo].template",
        "no template 'promo_v9'",
    ),
    (
        "unknown_language",
        _set("campaigns.0.language", "de"),
        "campaigns[promo].language",
        "no language 'de'",
    ),
    (
        "variable_missing",
        _set("campaigns.0.variables.body.3", DELETE),
        "campaigns[promo].variables.body",
        "missing {{3}}",
    ),
    (
        "variable_extra",
        _set("campaigns.0.variables.body.4", "extra"),
        "campaigns[promo].variables.body",
        "not in the template: {{4}}",
    ),
    (
        "header_variable_missing",
        _set("campaigns.0.variables.header", {}),
        "campaigns[promo].variables.header",
        "missing {{1}}",
    ),
    (
        "variable_gap_key",
        _set("campaigns.1.variables.body", {2: "first_name"}),
        "campaigns[notice].variables.body",
        "missing {{1}}",
    ),
    (
        "variable_key_text",
        _set("campaigns.1.variables.body", {"one": "first_name"}),
        "campaigns[notice].variables.body.one",
        "valid integer",
    ),
    (
        "variable_both",
        _set("campaigns.0.variables.body.1", {"column": "a", "literal": "b"}),
        "campaigns[promo].variables.body.1",
        "exactly one of",
    ),
    (
        "variable_blank_column",
        _set("campaigns.0.variables.body.1", "  "),
        "campaigns[promo].variables.body.1.column",
        "cannot be empty",
    ),
    (
        "currency_missing",
        _set("campaigns.0.variables.body.2", {"column": "code", "format": "currency"}),
        "campaigns[promo].variables.body.2.currency",
        "needs 'currency'",
    ),
    (
        "currency_unknown",
        _set(
            "campaigns.0.variables.body.2",
            {"column": "code", "format": "currency", "currency": "ABC"},
        ),
        "campaigns[promo].variables.body.2.currency",
        "ISO 4217",
    ),
    (
        "format_unknown",
        _set("campaigns.0.variables.body.3", {"column": "expires", "format": "time"}),
        "campaigns[promo].variables.body.3.format",
        "'date', 'number' or 'currency'",
    ),
    (
        "literal_newline",
        _set("campaigns.0.variables.header.1", {"literal": "d'hiver\n2026"}),
        "campaigns[promo].variables.header.1",
        "newline_or_tab",
    ),
    (
        "literal_long_header",
        _set("campaigns.0.variables.header.1", {"literal": "x" * 61}),
        "campaigns[promo].variables.header.1",
        "longer_than_60",
    ),
    (
        "literal_bad_date",
        _set("campaigns.0.variables.body.3", {"literal": "bientôt", "format": "date"}),
        "campaigns[promo].variables.body.3",
        "is not a date",
    ),
    (
        "format_language",
        _set("templates.1.language", "zz"),
        "campaigns[notice].language",
        "no language 'en_US'",
    ),
    (
        "template_gap",
        _set("templates.0.body", "Bonjour {{1}}, code {{3}}"),
        "templates[promo_v1/fr].body",
        "without gaps",
    ),
    (
        "template_named",
        _set("templates.1.body", "Hello {{first_name}}"),
        "templates[notice_v1/en_US].body",
        "only numbered placeholders",
    ),
    (
        "template_header_two",
        _set("templates.0.header", "Offre {{1}} {{2}}"),
        "templates[promo_v1/fr].header",
        "at most one placeholder",
    ),
    (
        "template_category",
        _set("templates.0.category", "PROMOTION"),
        "templates[promo_v1/fr].category",
        "'MARKETING', 'UTILITY' or 'AUTHENTICATION'",
    ),
    (
        "template_language",
        _set("templates.0.language", "French"),
        "templates[promo_v1/French].language",
        "should match pattern",
    ),
    (
        "template_twice",
        lambda raw: raw["templates"].append(dict(raw["templates"][1])),
        "templates[notice_v1/en_US]",
        "declared twice",
    ),
    ("campaigns_not_list", _set("campaigns", {"promo": {}}), "campaigns", "valid list"),
    (
        "table_name",
        _set("consents_table", "consents; DROP TABLE x"),
        "consents_table",
        "should match pattern",
    ),
]
