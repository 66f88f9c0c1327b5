"""Template placeholders and WhatsApp's parameter rules: what breaks one, the fast paths checked
against the rules one by one, the UTF-16 length, and cleaning (a cleaned value always sendable)."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbound_pipeline.whatsapp import (
    BODY_ONLY_PARAM_MAX,
    BODY_PARAM_MAX,
    HEADER_PARAM_MAX,
    clean_parameter,
    is_blank,
    parameter_violation,
    placeholders,
    unnumbered_placeholders,
    whatsapp_length,
)
from outbound_pipeline_tests.template_values import any_text, components

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
