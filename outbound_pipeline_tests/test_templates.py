"""Template placeholders, WhatsApp's parameter rules, cleaning and per-row rendering.

Property tests (hypothesis): whatever the input, what is rendered never breaks a WhatsApp rule, and
rendering is exact for valid input.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbound_pipeline.config import OutboundConfig, parse_config
from outbound_pipeline.messages import RenderSkip, render_row
from outbound_pipeline.whatsapp import (
    BODY_ONLY_PARAM_MAX,
    BODY_PARAM_MAX,
    HEADER_PARAM_MAX,
    clean_parameter,
    format_value,
    is_blank,
    parameter_violation,
    params_from_payload,
    placeholders,
    preview_text,
    render_text,
    unnumbered_placeholders,
    variables_payload,
    whatsapp_length,
)
from outbound_pipeline_tests.config_cases import minimal_config

# Characters that exercise the rules, mixed into arbitrary Unicode text.
SPECIALS = [
    " ",
    " ",
    "    ",
    "     ",
    "\u00a0",
    "\u00a0" * 5,
    "\u202f",
    "\u3000",
    "\n",
    "\r",
    "\t",
    "\v",
    "\f",
    "\x85",
    "\u2028",
    "\u2029",
    "\x00",
    "\x1b",
    "\x7f",
    "\u200b",
    "\u200d",
    "\u200f",
    "\ufeff",
    "\u0301",
    "\u0653",
    "😀",
    "👍🏽",
    "👨‍👩‍👧",
    "🇫🇷",
    "שלום",
    "مرحبا",
    "'",
    '"',
    "\\",
    "\\1",
    "{{1}}",
    "{{2}}",
    "%s",
    "{0}",
    "'; DROP TABLE customers; --",
    "e\u0301",
    "\ud7ff",
    "\U0010ffff",
]
hostile_text = st.lists(
    st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(SPECIALS)), max_size=40
).map("".join)
# Long values too: the limits are 60, 1,024 and 32,768.
long_text = st.builds(
    lambda chunk, n: chunk * n, hostile_text, st.integers(min_value=1, max_value=1200)
)
any_text = st.one_of(hostile_text, long_text)
components = st.sampled_from([("header", False), ("body", False), ("body", True)])


def _reference_render(text: str, values: list[str]) -> str:
    """An independent substitution: split on placeholders and join, no regex replacement."""
    pieces = re.split(r"\{\{\s*([0-9]+)\s*\}\}", text)
    return "".join(values[int(p) - 1] if i % 2 else p for i, p in enumerate(pieces))


# --- placeholders -----------------------------------------------------------------------------------


def test_placeholders_are_numbered_ascii_digits() -> None:
    assert placeholders("Hi {{1}}, {{ 2 }} and {{1}} again") == [1, 2]
    assert placeholders("no placeholder") == []
    # Arabic-Indic and full-width digits are not placeholder numbers.
    assert placeholders("{{١}} {{１}}") == []
    assert unnumbered_placeholders("Hi {{first_name}} {{1}} {{ }}") == ["{{first_name}}", "{{ }}"]


# --- the rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "component", "body_only", "rule"),
    [
        ("Camille", "body", False, None),
        ('O\'Brien "the" -- ; DROP TABLE x', "body", False, None),
        ("a    b", "body", False, None),  # 4 spaces: allowed
        ("a     b", "body", False, "more_than_4_consecutive_spaces"),
        ("a\u00a0\u00a0\u00a0\u00a0\u00a0b", "body", False, "more_than_4_consecutive_spaces"),
        ("a  \u202f  b", "body", False, "more_than_4_consecutive_spaces"),
        ("line\nbreak", "body", False, "newline_or_tab"),
        ("carriage\rreturn", "body", False, "newline_or_tab"),
        ("tab\there", "header", False, "newline_or_tab"),
        ("unicode\u2028line", "body", False, "newline_or_tab"),
        ("nul\x00byte", "body", False, "control_character"),
        ("escape\x1b[31m", "body", False, "control_character"),
        ("", "body", False, "empty"),
        ("   ", "body", False, "empty"),
        ("\u200b\u200f\ufeff", "body", False, "empty"),  # only invisible characters
        ("\t\n", "body", False, "empty"),
        ("x" * HEADER_PARAM_MAX, "header", False, None),
        ("x" * (HEADER_PARAM_MAX + 1), "header", False, "longer_than_60_characters"),
        ("x" * BODY_PARAM_MAX, "body", False, None),
        ("x" * (BODY_PARAM_MAX + 1), "body", False, "longer_than_1024_characters"),
        ("x" * (BODY_PARAM_MAX + 1), "body", True, None),
        ("x" * BODY_ONLY_PARAM_MAX, "body", True, None),
        ("x" * (BODY_ONLY_PARAM_MAX + 1), "body", True, "longer_than_32768_characters"),
        # Emoji outside the BMP count 2 (UTF-16): 30 fit in a header, 31 do not.
        ("😀" * 30, "header", False, None),
        ("😀" * 31, "header", False, "longer_than_60_characters"),
        # A combining accent counts 1 on its own: 30 accented letters written decomposed = 60.
        ("e\u0301" * 30, "header", False, None),
        ("e\u0301" * 30 + "e", "header", False, "longer_than_60_characters"),
        ("مرحبا بك", "header", False, None),
    ],
)
def test_parameter_rules(value: str, component: str, body_only: bool, rule: str | None) -> None:
    assert parameter_violation(value, component, body_only) == rule


def _rule_broken_one_by_one(value: str, component: str, body_only: bool) -> str | None:
    """The rules checked one by one, every character looked at: what the fast paths must give."""
    if not any(not ch.isspace() and unicodedata.category(ch) not in INVISIBLE for ch in value):
        return "empty"
    if re.search("[\t\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029]", value):
        return "newline_or_tab"
    if re.search("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]", value):
        return "control_character"
    if re.search("[ \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]{5,}", value):
        return "more_than_4_consecutive_spaces"
    limit = {"header": HEADER_PARAM_MAX}.get(
        component, BODY_ONLY_PARAM_MAX if body_only else BODY_PARAM_MAX
    )
    if len(value.encode("utf-16-le", errors="surrogatepass")) // 2 > limit:
        return f"longer_than_{limit}_characters"
    return None


INVISIBLE = {"Cc", "Cf", "Zl", "Zp", "Zs", "Cs"}


@given(
    value=st.one_of(
        any_text,
        # Around the header's limit, where the count of UTF-16 units decides.
        st.text(
            alphabet=st.sampled_from(["a", "é", "😀", " ", "\u200b"]), min_size=25, max_size=70
        ),
    ),
    component=components,
)
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_the_rules_fast_paths_give_what_checking_each_rule_gives(
    value: str, component: tuple[str, bool]
) -> None:
    name, body_only = component
    assert parameter_violation(value, name, body_only) == _rule_broken_one_by_one(
        value, name, body_only
    )
    assert is_blank(value) is (_rule_broken_one_by_one(value, name, body_only) == "empty")


def test_length_counts_utf16_code_units() -> None:
    assert whatsapp_length("abc") == 3
    assert whatsapp_length("é") == 1 and whatsapp_length("e\u0301") == 2
    assert whatsapp_length("😀") == 2
    assert whatsapp_length("👨‍👩‍👧") == 8  # three emoji and two zero-width joiners


@given(value=any_text, component=components)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_cleaning_always_gives_a_sendable_value(value: str, component: tuple[str, bool]) -> None:
    name, body_only = component
    cleaned = clean_parameter(value, name, body_only)
    if is_blank(value):
        assert parameter_violation(cleaned, name, body_only) == "empty"
        return
    assert parameter_violation(cleaned, name, body_only) is None, (value, cleaned)
    if parameter_violation(value, name, body_only) is None:
        assert cleaned == value  # a valid value is never touched
    # Cleaning keeps the text: every visible character of the result comes from the input, in order.
    body = (
        cleaned.removesuffix("…") if cleaned.endswith("…") and not value.endswith("…") else cleaned
    )
    source = iter(value)
    assert all(ch in " " or any(ch == s for s in source) for ch in body)


def test_cleaning_examples() -> None:
    assert (
        clean_parameter("Rue de la Paix\n75002\tParis", "body", False)
        == "Rue de la Paix 75002 Paris"
    )
    assert clean_parameter("a        b", "body", False) == "a    b"
    assert clean_parameter("nul\x00byte", "body", False) == "nulbyte"
    header = clean_parameter("😀" * 40, "header", False)
    assert header == "😀" * 29 + "…" and whatsapp_length(header) == 59
    long_body = clean_parameter("word " * 300, "body", False)
    assert (
        whatsapp_length(long_body) == BODY_PARAM_MAX
        and long_body.startswith("word word")
        and long_body.endswith("…")
    )


# --- rendering --------------------------------------------------------------------------------------

template_texts = st.lists(
    st.one_of(
        hostile_text.map(lambda t: t.replace("{", "(").replace("}", ")")),
        st.integers(1, 3).map(lambda n: f"{{{{{n}}}}}"),
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
