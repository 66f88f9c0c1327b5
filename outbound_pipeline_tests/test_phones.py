"""Phone normalisation (libphonenumber), masking, and the audience verdict that uses them."""

from __future__ import annotations

import random
import re
from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from outbound_pipeline.audience import CONSENT_STATUS, verdict
from outbound_pipeline.audience.verdicts import verdicts
from outbound_pipeline.config import parse_config
from outbound_pipeline.whatsapp import (
    is_valid_e164,
    mask,
    mask_phones_in,
    normalise,
    phones,
    wire_format,
)
from outbound_pipeline_tests.config_cases import minimal_config

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
REASONS = {
    "phone_missing",
    "phone_too_long",
    "phone_has_letters",
    "phone_unparseable",
    "phone_invalid",
}
REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
# "+" and 15 digits; libphonenumber's parser reads some 17-digit German numbers as valid.
E164_LONGEST = 16
# One of those: valid to libphonenumber, too long for E.164 (found by searching random +49 numbers).
GERMAN_17_DIGITS = "+4999535866899368"


@pytest.mark.parametrize(
    ("raw", "region", "e164", "reason"),
    [
        ("+33612345678", "FR", "+33612345678", None),
        ("06 12 34 56 78", "FR", "+33612345678", None),
        ("06.12.34.56.78", "fr", "+33612345678", None),
        ("0033 6 12 34 56 78", "FR", "+33612345678", None),
        (
            "0033612345678",
            "US",
            "+33612345678",
            None,
        ),  # 00 read as the international prefix anywhere
        ("  +33 (0)6 12-34-56-78  ", None, "+33612345678", None),
        ("+1 202-555-0143", "FR", "+12025550143", None),
        ("(202) 555-0143", "US", "+12025550143", None),
        ("0450 00 12 34", "BE", "+32450001234", None),
        ("٠٦١٢٣٤٥٦٧٨", "FR", "+33612345678", None),  # Arabic-Indic digits are digits
        ("\u200f+33612345678", "FR", "+33612345678", None),  # a right-to-left mark before it
        (None, "FR", None, "phone_missing"),
        ("", "FR", None, "phone_missing"),
        ("   \t ", "FR", None, "phone_missing"),
        ("06 12 AB 56 78", "FR", None, "phone_has_letters"),
        ("+33 6 CALL NOW", "FR", None, "phone_has_letters"),
        ("06 12 34 56 78 ext. 5", "FR", None, "phone_has_letters"),
        ("'; DROP TABLE customers; --", "FR", None, "phone_has_letters"),
        ("+33 6 12 З4 56 78", "FR", None, "phone_has_letters"),  # a Cyrillic letter Ze
        ("+33 6 12 34 56 7", "FR", None, "phone_invalid"),
        ("0612345678", None, None, "phone_unparseable"),  # national format without a region
        ("0612345678", "XX", None, "phone_unparseable"),
        ("+999 123456789", "FR", None, "phone_unparseable"),
        # Valid to libphonenumber, but more than E.164's 15 digits: unsendable, and stored it would
        # fail the blocking check on phones and stop the whole day.
        (GERMAN_17_DIGITS, None, None, "phone_invalid"),
        ("0" + GERMAN_17_DIGITS[3:], "DE", None, "phone_invalid"),
        ("+", "FR", None, "phone_unparseable"),
        ("12", "FR", None, "phone_invalid"),
        ("9" * 10_000, "FR", None, "phone_too_long"),
        ("06 12 34 56 78 / 06 98 76 54 32", "FR", None, "phone_unparseable"),
    ],
)
def test_normalise(
    raw: str | None, region: str | None, e164: str | None, reason: str | None
) -> None:
    result = normalise(raw, region)
    assert (result.e164, result.reason) == (e164, reason)
    if e164:
        assert result.region == phonenumbers.region_code_for_number(phonenumbers.parse(e164))


phone_like = st.lists(
    st.one_of(
        st.sampled_from(list("0123456789+-(). ")),
        st.sampled_from(["00", "+33", "+1", "06", "\u200f", "٠", "x", "ext", "\t", "\x00"]),
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=30,
).map("".join)


@given(
    raw=st.one_of(st.none(), phone_like, st.text()),
    region=st.one_of(st.none(), st.sampled_from(REGIONS)),
)
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_normalise_gives_valid_e164_or_a_reason(raw: str | None, region: str | None) -> None:
    result = normalise(raw, region)
    if result.e164 is None:
        assert result.reason in REASONS and result.region is None
        return
    assert result.reason is None
    assert E164.match(result.e164), result.e164
    number = phonenumbers.parse(result.e164, None)
    assert phonenumbers.is_valid_number(number)
    assert phonenumbers.region_code_for_number(number) == result.region
    # Stored and sent as is: normalising the result again changes nothing.
    assert normalise(result.e164, None) == result
    assert is_valid_e164(result.e164)
    assert not any(ch.isalpha() for ch in raw or "")


@given(value=st.one_of(st.none(), phone_like, phone_like.map(lambda s: "+" + s), st.text()))
@example(value=GERMAN_17_DIGITS)
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_the_checks_e164_test_agrees_with_normalisation(value: str | None) -> None:
    # The blocking check calls libphonenumber on its own; it must keep the extraction's bar exactly.
    expected = bool(value) and value.startswith("+") and normalise(value, None).e164 == value
    assert is_valid_e164(value) is expected


def _parser_says_e164(value: str) -> bool:
    """The bar before the digits path: libphonenumber's parser, validity, E.164 written back, and
    E.164's length."""
    read = _parser_reads(value, None)
    return read is not None and read[0] == value


ALL_EXAMPLES = sorted(
    {
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        for region in REGIONS
        for kind in phonenumbers.PhoneNumberType.values()
        if (number := phonenumbers.example_number_for_type(region, kind)) is not None
    }
    | {  # +800, +882...: numbers of no country
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
        if (number := phonenumbers.example_number_for_non_geo_entity(code)) is not None
    }
)


def _with_neighbours(examples: list[str]) -> list[str]:
    """The examples, each with a digit added, dropped, a 0 after the country code and each other
    last digit (a number type's pattern may admit some and not others), in order."""
    values = set(examples)
    for e164 in examples:
        values.update({e164 + "5", e164[:-1], e164[:3] + "0" + e164[3:], e164[:2] + "0" + e164[2:]})
        values.update(e164[:-1] + digit for digit in "0123456789")
    return sorted(values)


# Every example number of every region and type and its neighbours: every description's
# patterns and possible lengths are used.
EXAMPLES_AND_NEIGHBOURS = _with_neighbours(ALL_EXAMPLES)


# Any text a phone column may hold, for hypothesis: none, any text, "+" and digits, example numbers.
PHONE_TEXTS = st.one_of(
    st.none(),
    st.text(),
    st.text(alphabet="0123456789", max_size=16).map(lambda s: "+" + s),
    st.sampled_from(ALL_EXAMPLES),
)
# Texts at the edges of E.164: zeros alone, too short, a newline or space around, other digits.
EDGE_PHONE_TEXTS = ["+3300000000", "+33", "+", "", "+33612345678\n", " +33612345678", "+١٢٣"]


def random_plus_numbers(seed: int, count: int) -> list[str]:
    """`count` texts of "+", a country code (one in ten made up) and random digits, 15 at most."""
    rng = random.Random(seed)
    codes = [str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE]
    values = []
    for _ in range(count):
        code = rng.choice(codes) if rng.random() < 0.9 else str(rng.randint(1, 999))
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 15 - len(code))))
        values.append("+" + code + digits)
    return values


def test_numbers_in_e164_are_read_as_libphonenumbers_parser_reads_them() -> None:
    # Every example number of every region and type (Italian leading zeros, +1 and +7 shared codes,
    # toll-free, pagers...), and each with a digit added, dropped, or a 0 after the country code,
    # and with each other last digit (a number type's pattern may admit some and not others).
    disagree = [
        v
        for v in EXAMPLES_AND_NEIGHBOURS
        if is_valid_e164(v) != _parser_says_e164(v)
        or (normalise(v, None).e164 == v) != _parser_says_e164(v)
    ]
    assert len(ALL_EXAMPLES) > 900
    assert disagree == []


@given(
    digits=st.text(alphabet="0123456789", min_size=1, max_size=15),
    prefix=st.sampled_from(["", "1", "7", "33", "39", "44", "225", "379", "800", "882", "979"]),
)
@example(digits="0000000", prefix="800")  # zeros alone: valid, one zero more in E.164
@example(digits="0612345678", prefix="39")
@settings(max_examples=600)
def test_any_plus_and_digits_is_read_as_the_parser_reads_it(digits: str, prefix: str) -> None:
    value = "+" + prefix + digits
    assert is_valid_e164(value) is _parser_says_e164(value)
    assert (normalise(value, None).e164 == value) is _parser_says_e164(value)


@pytest.mark.parametrize(
    "e164",
    [
        "+12015550123",
        "+14165550123",
        "+18095550123",
        "+447911123456",
        "+447624123456",
        "+33612345678",
    ],
)
def test_numbers_of_shared_country_codes_keep_their_own_region(e164: str) -> None:
    number = phonenumbers.parse(e164, None)
    assert normalise(e164, None) == normalise(e164, "FR")
    assert normalise(e164, None).region == phonenumbers.region_code_for_number(number)
    assert normalise(e164, None).e164 == (e164 if phonenumbers.is_valid_number(number) else None)


def _example(region: str) -> phonenumbers.PhoneNumber | None:
    for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
        number = phonenumbers.example_number_for_type(region, kind)
        if number is not None and phonenumbers.is_valid_number(number):
            return number
    return None


EXAMPLES = {r: n for r in REGIONS if (n := _example(r)) is not None}


@given(
    region=st.sampled_from(sorted(EXAMPLES)),
    other=st.sampled_from(REGIONS),
    style=st.sampled_from(["national", "international", "e164", "double_zero"]),
    separator=st.sampled_from(["", " ", "-", ".", "  "]),
)
@settings(max_examples=400)
def test_every_written_form_of_a_valid_number_gives_its_e164(
    region: str, other: str, style: str, separator: str
) -> None:
    number = EXAMPLES[region]
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if style == "national":
        # A national form is read in its own region (the campaign's default region).
        raw, default = (
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
            region,
        )
    elif style == "international":
        raw, default = (
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
            other,
        )
    elif style == "double_zero":
        raw, default = "00" + e164[1:], other
    else:
        raw, default = e164, other
    raw = raw.replace(" ", separator)
    result = normalise(raw, default)
    assert result.e164 == e164, (raw, default, result)


def _parser_reads(text: str, region: str | None) -> tuple[str, str] | None:
    """(E.164, region) of what libphonenumber's parser reads in `text`, if valid and not too long
    for E.164; what `normalise` must give, whichever way it reads the text."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(number) or len(e164) > E164_LONGEST:
        return None
    return e164, phonenumbers.region_code_for_number(number)


def _normalised(text: str, region: str) -> tuple[str, str] | None:
    result = normalise(text, region)
    return None if result.e164 is None or result.region is None else (result.e164, result.region)


def _national_digits(number: phonenumbers.PhoneNumber, region: str) -> str:
    """The number as its region writes it at home, digits alone: national prefix, then number."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    prefix = (metadata.national_prefix if metadata else None) or ""
    return prefix + phonenumbers.national_significant_number(number)


def test_national_forms_are_read_as_libphonenumbers_parser_reads_them() -> None:
    # Every example number of every region and type, in its region's national form: as formatted
    # by libphonenumber, as digits alone and spaced, with a digit changed, added or dropped, and
    # read in another region too. Most are read without the parser (phones._read_national): all
    # must come out as the parser reads them.
    texts: set[tuple[str, str]] = set()
    for region in REGIONS:
        for kind in phonenumbers.PhoneNumberType.values():
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            digits = _national_digits(number, region)
            formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
            forms = {
                digits,
                formatted,
                digits + "5",
                digits[:-1],
                " ".join(digits),
                "-".join(digits),
            }
            forms.update(digits[:-1] + digit for digit in "0123456789")
            # Read in its region, in France and the US, and in each region that shares its
            # country code (a Jersey mobile in its national form read in Britain is JE's).
            sharing = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[number.country_code]
            read_ins = {region, "FR", "US", *sharing} - {
                phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
            }
            texts.update((form, read_in) for form in forms for read_in in read_ins)
    texts = {(text, region) for text, region in texts if not text.startswith("00")}
    read_without_parser = sum(
        phones._read_national(text.replace(" ", "").replace("-", ""), region) is not None
        for text, region in texts
    )
    disagree = [
        (text, region, _normalised(text, region), _parser_reads(text, region))
        for text, region in sorted(texts)
        if _normalised(text, region) != _parser_reads(text, region)
    ]
    assert disagree == []
    assert read_without_parser > 2000, read_without_parser


@pytest.mark.parametrize(
    ("text", "region", "without_parser"),
    [
        ("07797 712345", "GB", True),  # a Jersey mobile: JE's
        ("1800 20 7911 123456", "GB", True),  # Britain's other prefix, 180020
        ("0 29 123 45 67", "BY", True),  # Belarus's prefix is 0 or 8, 80...
        ("80 29 123 45 67", "BY", True),
        ("8 612 34567", "LT", True),
        ("8 912 345 67 89", "RU", True),
        ("0412 345 678", "AU", True),  # Australia's prefix pattern holds carrier codes too
        # The national number alone: no prefix written, or none in the region.
        ("(202) 555-0143", "US", True),
        ("6 12 34 56 78", "FR", True),
        ("612 34 56 78", "ES", True),
        ("06 1234 5678", "IT", True),  # Rome: an Italian number keeps its leading zero
        # Argentina's prefix is transformed (a mobile's 15 becomes 9): the parser reads it.
        ("011 15 1123 4567", "AR", False),
        ("01115 800 123 4567", "AR", False),
        ("1 202 555 0143", "US", False),  # +1's prefix is the country code
    ],
)
def test_national_forms_with_each_prefix_are_read_as_the_parser_reads_them(
    text: str, region: str, without_parser: bool
) -> None:
    assert _normalised(text, region) == _parser_reads(text, region)
    assert (phones._read_national(text, region) is not None) is without_parser


@given(
    region=st.sampled_from(REGIONS),
    digits=st.text(alphabet="0123456789", min_size=1, max_size=14),
    separator=st.sampled_from(["", " ", ".", "-", " - "]),
    prefixed=st.booleans(),
)
@example(region="FR", digits="612345678", separator=" ", prefixed=True)
@example(region="DE", digits="30123456", separator="", prefixed=True)
@settings(max_examples=800)
def test_any_digits_are_read_in_a_region_as_the_parser_reads_them(
    region: str, digits: str, separator: str, prefixed: bool
) -> None:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    prefix = (metadata.national_prefix if metadata and prefixed else None) or ""
    text = separator.join(prefix + digits)
    if text.startswith("00"):
        return  # read as the international prefix in every region (test_normalise)
    assert _normalised(text, region) == _parser_reads(text, region)


@given(
    region=st.sampled_from(REGIONS),
    text=st.text(alphabet="0123456789 .-()", min_size=1, max_size=20),
)
@example(region="US", text="(202) 555-0143")
@example(region="IT", text="06 1234 5678")
@settings(max_examples=800)
def test_digits_and_separators_are_read_in_a_region_as_the_parser_reads_them(
    region: str, text: str
) -> None:
    if text.strip().startswith("00"):
        return  # read as the international prefix in every region (test_normalise)
    assert _normalised(text, region) == _parser_reads(text, region)


@pytest.mark.parametrize(
    "text", ["+33 6 12 34 56 78", "+33.6.12.34.56.78", "+1 202-555-0143", "+44 7911 123456"]
)
def test_international_forms_with_separators_are_read_as_the_parser_reads_them(text: str) -> None:
    assert _normalised(text, "FR") == _parser_reads(text, "FR") is not None


@given(
    digits=st.text(alphabet="0123456789", min_size=1, max_size=15),
    prefix=st.sampled_from(["", "1", "7", "33", "39", "44", "225", "375", "800"]),
    separator=st.sampled_from([" ", ".", "-", " - "]),
)
@example(digits="612345678", prefix="33", separator=" ")
@settings(max_examples=400)
def test_a_plus_number_with_separators_is_read_as_its_compact_form(
    digits: str, prefix: str, separator: str
) -> None:
    # The compact form is held to the parser by test_any_plus_and_digits_is_read_as_the_parser...
    # (the reasons may differ: a digit apart in " - " can be too long a text to read at all).
    spaced = normalise("+" + separator.join(prefix + digits), None)
    compact = normalise("+" + prefix + digits, None)
    assert (spaced.e164, spaced.region) == (compact.e164, compact.region)


def test_a_number_the_parser_reads_otherwise_after_its_country_code_is_read_as_written() -> None:
    """Belarus's 810 numbers (the one case in libphonenumber's metadata): after +375 the parser
    strips 8 as a national prefix and finds the rest invalid, where its is_valid_number, and its
    parser reading them in their national form, find them valid. Read as written, a stored
    number normalises to itself and passes the blocking check."""
    national = normalise("8 810 045 50 62", "BY")
    assert (national.e164, national.region) == ("+3758100455062", "BY")
    for written in ("+3758100455062", "+375 810 045 50 62", "00375 810 045 50 62"):
        assert normalise(written, "FR") == national
    assert is_valid_e164("+3758100455062")
    # libphonenumber's own reading, why this is an exception (revisit if it changes).
    assert _parser_reads("+3758100455062", "FR") is None


def test_mask_hides_the_number() -> None:
    assert mask("+33612345678") == "+336******78"
    assert mask(None) == "" and mask("") == ""
    assert mask("1234") == "****"
    hostile = mask("9" * 10_000)
    assert len(hostile) == 18 and hostile.count("9") == 6
    assert wire_format("+33612345678") == "33612345678"


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ('invalid input syntax for type bigint: "+33612345678"', "+33612345678"),
        ("value 06 12 34 56 78 refused", "06 12 34 56 78"),
        ("call +1 (415) 555-0132 later", "(415) 555-0132"),
        ("call 415 - 555 - 0132 later", "555 - 0132"),
        ("[parameters: ('+447700900123', 'C0001')]", "447700900123"),
    ],
)
def test_phone_numbers_inside_a_text_are_masked(text: str, hidden: str) -> None:
    masked = mask_phones_in(text)
    assert hidden not in masked and "*" in masked
    # The words around them stay readable.
    assert masked.split()[0] == text.split()[0]


def test_short_numbers_inside_a_text_stay() -> None:
    assert (
        mask_phones_in("failed after 15000 rows, code 131026")
        == "failed after 15000 rows, code 131026"
    )


@given(st.text(min_size=7))
def test_mask_never_shows_more_than_six_characters(phone: str) -> None:
    masked = mask(phone)
    assert sum(ch != "*" for ch in masked) <= 6


# --- the verdict: consent, phone, marketing to US numbers --------------------------------------------

CONFIG = parse_config(minimal_config(phone_region="FR"), "test.yaml")


def _verdict(
    category: str = "MARKETING", **record: Any
) -> tuple[str | None, str | None, str | None]:
    campaign = CONFIG.campaign("promo")
    template = CONFIG.template_for(campaign).model_copy(update={"category": category})
    row = {"customer_id": "c1", "phone": "+33612345678", CONSENT_STATUS: "opted_in", **record}
    return verdict(campaign, template, row)


VERDICT_CASES = [
    ({}, "MARKETING", ("+33612345678", "FR", None)),
    ({"phone": "06 12 34 56 78"}, "MARKETING", ("+33612345678", "FR", None)),
    # The customer's country reads national numbers; the campaign's region is the fallback.
    ({"phone": "0450 00 12 34", "country": "BE"}, "UTILITY", ("+32450001234", "BE", None)),
    ({"phone": "0450 00 12 34", "country": "be "}, "UTILITY", ("+32450001234", "BE", None)),
    # Without the country, the same digits are a valid French number: someone else's phone. This
    # is why the country column is read when the query returns it.
    ({"phone": "0450 00 12 34", "country": None}, "UTILITY", ("+33450001234", "FR", None)),
    ({"phone": "0612345678", "country": "BE"}, "UTILITY", (None, None, "phone_invalid")),
    ({"phone": "06 12 34 56 78", "country": "'; --"}, "UTILITY", ("+33612345678", "FR", None)),
    # WhatsApp does not deliver marketing templates to US numbers (nor to US territories).
    (
        {"phone": "+1 202-555-0143"},
        "MARKETING",
        ("+12025550143", "US", "marketing_not_delivered_to_us"),
    ),
    (
        {"phone": "+1 787-234-5678"},
        "MARKETING",
        ("+17872345678", "PR", "marketing_not_delivered_to_us"),
    ),
    ({"phone": "+1 202-555-0143"}, "UTILITY", ("+12025550143", "US", None)),
    ({"phone": "+1 416-555-0143"}, "MARKETING", ("+14165550143", "CA", None)),
    ({"phone": "06 12 AB 56 78"}, "UTILITY", (None, None, "phone_has_letters")),
    ({"phone": None}, "UTILITY", (None, None, "phone_missing")),
    ({CONSENT_STATUS: "opted_out"}, "UTILITY", ("+33612345678", "FR", "opted_out")),
    ({CONSENT_STATUS: None}, "UTILITY", ("+33612345678", "FR", "no_consent")),
    ({CONSENT_STATUS: "OPTED_IN"}, "UTILITY", ("+33612345678", "FR", "no_consent")),
    ({"customer_id": None}, "UTILITY", ("+33612345678", "FR", "customer_id_missing")),
    ({"customer_id": "  "}, "UTILITY", ("+33612345678", "FR", "customer_id_missing")),
    ({"customer_id": "c" * 10_000}, "UTILITY", ("+33612345678", "FR", "customer_id_too_long")),
    # Consent comes before the phone: an opted-out customer with a bad phone is 'opted_out'.
    ({"phone": "abc", CONSENT_STATUS: "opted_out"}, "UTILITY", (None, None, "opted_out")),
]


@pytest.mark.parametrize(("record", "category", "expected"), VERDICT_CASES)
def test_verdict(
    record: dict[str, Any], category: str, expected: tuple[str | None, str | None, str | None]
) -> None:
    assert _verdict(category, **record) == expected


@pytest.mark.parametrize("category", ["MARKETING", "UTILITY"])
def test_verdicts_of_a_chunks_columns_are_each_rows_verdict(category: str) -> None:
    # The audience's chunks are judged column by column: each case's verdict, row for row, in
    # order (a region or reason carried from one row to the next would show).
    cases = [(record, expected) for record, kind, expected in VERDICT_CASES if kind == category]
    records = [
        {"customer_id": "c1", "phone": "+33612345678", CONSENT_STATUS: "opted_in", **record}
        for record, _ in cases
    ]
    campaign = CONFIG.campaign("promo")
    template = CONFIG.template_for(campaign).model_copy(update={"category": category})
    columns = [
        [record.get(name) for record in records]
        for name in ("customer_id", "phone", "country", CONSENT_STATUS)
    ]
    assert verdicts(campaign, template, *columns) == [expected for _, expected in cases]
    assert len(cases) > 4
