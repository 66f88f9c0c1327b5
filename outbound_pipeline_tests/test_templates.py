"""Per-row rendering: placeholders substituted, values formatted, the parameter policy applied,
the variables' payload.

Property tests (hypothesis): whatever the input, what is rendered never breaks a WhatsApp rule, and
rendering is exact for valid input. The rules themselves: test_parameter_rules.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbound_pipeline.config import OutboundConfig, parse_config
from outbound_pipeline.messages import RenderSkip, render_row
from outbound_pipeline.whatsapp import (
    format_value,
    is_blank,
    parameter_violation,
    params_from_payload,
    preview_text,
    render_text,
    variables_payload,
)
from outbound_pipeline_tests.config_cases import minimal_config
from outbound_pipeline_tests.template_values import any_text, hostile_text


def _reference_render(text: str, values: list[str]) -> str:
    """An independent substitution: split on placeholders and join, no regex replacement."""
    pieces = re.split(r"\{\{\s*([0-9]+)\s*\}\}", text)
    return "".join(values[int(p) - 1] if i % 2 else p for i, p in enumerate(pieces))


# --- rendering --------------------------------------------------------------------------------------

template_texts = st.lists(
    st.one_of(
        hostile_text.map(lambda t: t.replace("{", "(").replace("}", ")")),
        st.integers(1, 3).map(lambda n: f"{{{{{n}}}}}"),
        # Spaces inside the braces are a placeholder too.
        st.integers(1, 3).map(lambda n: f"{{{{ {n}  }}}}"),
    ),
    max_size=8,
).map("".join)


@given(text=template_texts, values=st.lists(any_text, min_size=3, max_size=3))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_render_text_substitutes_exactly_once(text: str, values: list[str]) -> None:
    assert render_text(text, values) == _reference_render(text, values)


def _config(policy: str = "skip", **overrides: Any) -> OutboundConfig:
    raw = minimal_config(parameter_policy=policy, **overrides)
    return parse_config(raw, "test.yaml")


SKIP_CONFIG = _config("skip")
CLEAN_CONFIG = _config("clean")
BODY_ONLY_CONFIG = _config(
    "clean", template="notice_v1", language="en_US", variables={"body": {1: "first_name"}}
)


def _fields(first_name: Any, code: Any, expires: Any = "2026-12-08") -> dict[str, Any]:
    return {"first_name": first_name, "code": code, "expires": expires}


def _valid(component: str, body_only: bool = False) -> st.SearchStrategy[str]:
    return any_text.filter(lambda v: parameter_violation(v, component, body_only) is None)


@given(first_name=_valid("body"), code=_valid("body"))
@settings(
    max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
def test_rendering_is_exact_for_valid_values(first_name: str, code: str) -> None:
    for config in (SKIP_CONFIG, CLEAN_CONFIG):
        campaign = config.campaign("promo")
        template = config.template_for(campaign)
        header, body, preview, cleaned = render_row(campaign, template, _fields(first_name, code))
        assert cleaned == 0
        assert header == ["d'hiver"]
        assert body == [first_name, code, "8 décembre 2026"]
        expected = (
            "Offre d'hiver\n"
            + f"Bonjour {first_name}, votre code {code} expire le 8 décembre 2026."
        )
        assert preview == expected
        assert preview == preview_text(template.header, template.body, header, body)


@given(
    first_name=st.one_of(st.none(), any_text),
    code=st.one_of(st.none(), any_text, st.integers(), st.floats()),
)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_rendered_parameters_never_break_a_rule(first_name: Any, code: Any) -> None:
    for config in (SKIP_CONFIG, CLEAN_CONFIG):
        campaign = config.campaign("promo")
        template = config.template_for(campaign)
        try:
            header, body, preview, _ = render_row(campaign, template, _fields(first_name, code))
        except RenderSkip as skip:
            reason = str(skip)
            assert re.match(
                r"^(empty_value|parameter_rule|unformattable_value): (header|body) \{\{\d\}\}",
                reason,
            )
            # The reason names the column, and the rule when one was broken.
            assert "(first_name)" in reason or "(code)" in reason
            if reason.startswith("parameter_rule"):
                assert campaign.parameter_policy == "skip"
            if reason.startswith("empty_value"):
                assert any(v is None or is_blank(str(v)) for v in (first_name, code))
            continue
        assert len(header) == template.header_count and len(body) == template.body_count
        for component, params in (("header", header), ("body", body)):
            for value in params:
                assert parameter_violation(value, component, False) is None, value
        if campaign.parameter_policy == "skip":
            # Nothing is ever altered under 'skip': what is sent is what the query returned.
            assert body[:2] == [str(first_name), str(code)]
        assert preview == _reference_render(
            template.header or "", header
        ) + "\n" + _reference_render(template.body, body)


@given(value=any_text)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_body_only_template_allows_32768_and_cleans_within(value: str) -> None:
    campaign = BODY_ONLY_CONFIG.campaign("promo")
    template = BODY_ONLY_CONFIG.template_for(campaign)
    assert template.header is None
    try:
        _, body, preview, _ = render_row(campaign, template, {"first_name": value})
    except RenderSkip as skip:
        assert str(skip).startswith("empty_value: body {{1}} (first_name)")
        assert is_blank(value)
        return
    assert parameter_violation(body[0], "body", True) is None
    assert preview == f"Hello {body[0]}"


def test_skip_reasons_name_the_variable_the_column_and_the_rule() -> None:
    campaign = SKIP_CONFIG.campaign("promo")
    template = SKIP_CONFIG.template_for(campaign)
    cases = {
        "empty_value: body {{1}} (first_name) is empty": _fields(None, "X1"),
        "empty_value: body {{2}} (code) is empty": _fields("Ann", "   "),
        "parameter_rule: body {{2}} (code) newline_or_tab": _fields("Ann", "X\n1"),
        "parameter_rule: body {{1}} (first_name) longer_than_1024_characters": _fields(
            "A" * 10_000, "X1"
        ),
        "unformattable_value: body {{3}} (expires) is not a date": _fields(
            "Ann", "X1", "next week"
        ),
    }
    for reason, fields in cases.items():
        with pytest.raises(RenderSkip) as caught:
            render_row(campaign, template, fields)
        assert str(caught.value) == reason


def test_clean_policy_cleans_text_but_never_cuts_a_formatted_value() -> None:
    campaign = CLEAN_CONFIG.campaign("promo")
    template = CLEAN_CONFIG.template_for(campaign)
    _, body, _, cleaned = render_row(campaign, template, _fields("Ann\nMarie", "A" * 2000))
    assert body[0] == "Ann Marie" and body[1] == "A" * 1023 + "…" and cleaned == 2
    # Empty stays a skip under 'clean': cleaning cannot invent a first name.
    with pytest.raises(RenderSkip, match=r"^empty_value: body \{\{1\}\} \(first_name\)"):
        render_row(campaign, template, _fields("\u200b", "X"))


@pytest.mark.parametrize(
    ("value", "fmt", "language", "expected"),
    [
        ("2026-12-08", "date", "fr", "8 décembre 2026"),
        ("2026-12-08T23:10:00+01:00", "date", "fr", "8 décembre 2026"),
        (dt.date(2026, 12, 8), "date", "en_US", "December 8, 2026"),
        ("1234567.5", "number", "fr", "1\u202f234\u202f567,5"),
        (12, "number", "en_US", "12"),
        ("12.5", "currency", "fr", "12,50\u00a0€"),
    ],
)
def test_format_value(value: Any, fmt: str, language: str, expected: str) -> None:
    source = (
        SKIP_CONFIG.campaign("promo")
        .variables.body[3]
        .model_copy(update={"format": fmt, "currency": "EUR" if fmt == "currency" else None})
    )
    assert format_value(value, source, language) == expected


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-inf", "12 €", True, "", "1,5"])
def test_format_value_refuses_what_is_not_a_finite_number(value: Any) -> None:
    source = SKIP_CONFIG.campaign("promo").variables.body[3].model_copy(update={"format": "number"})
    with pytest.raises((ValueError, ArithmeticError, TypeError)):
        format_value(value, source, "fr")


@pytest.mark.parametrize(
    "value", ["2026-12-08 garbage", "08/12/2026", "tomorrow", "2026-02-30", ""]
)
def test_format_value_refuses_what_is_not_an_iso_date(value: str) -> None:
    source = SKIP_CONFIG.campaign("promo").variables.body[3]
    assert source.format == "date"
    with pytest.raises(ValueError):
        format_value(value, source, "fr")


@given(st.lists(any_text, max_size=5))
def test_variables_payload_round_trip(values: list[str]) -> None:
    assert params_from_payload(variables_payload(values)) == values


def test_params_from_payload_refuses_gaps_and_repeats() -> None:
    with pytest.raises(ValueError, match="1..n"):
        params_from_payload([{"key": "1", "value": "a"}, {"key": "3", "value": "b"}])
    with pytest.raises(ValueError, match="twice"):
        params_from_payload([{"key": "1", "value": "a"}, {"key": "1", "value": "b"}])
