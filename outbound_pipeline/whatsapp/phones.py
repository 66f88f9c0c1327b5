"""Phone numbers: normalisation to E.164 with libphonenumber, and masking for logs and UI."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, NamedTuple

import phonenumbers

# libphonenumber compiles its metadata's patterns on every validation through Python's own regex
# cache (512 entries, shared with the rest of the process); keeping them (bounded by the
# metadata) makes a validation about a quarter cheaper (8.1 -> 5.7 us an E.164 number).
phonenumbers.enable_pattern_cache()

# libphonenumber refuses inputs longer than 250 characters anyway; refusing them before the cache
# keeps hostile 10,000-character values out of it (the cache holds its keys).
MAX_PHONE_INPUT = 64
E164_MAX_LENGTH = 16  # "+" and at most 15 digits
# "+", a country code, digits only (the form E.164 writes; the one definition of it): what
# `_e164_parts` reads without libphonenumber's parser.
E164_SHAPE = re.compile(r"\+[1-9][0-9]{1,14}")
# What the parser drops between a number's digits that the readings without it drop too: spaces,
# dots, dashes and brackets ("06 12 34 56 78", "+33 6.12.34.56.78", "(202) 555-0143").
_SEPARATORS = str.maketrans("", "", " .-()")
# Each country code written in digits, to the code: looked up as written, not made an int first.
_COUNTRY_CODES = {str(code): code for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}
# What str.isalpha finds in ASCII text, in one search instead of a test per character.
_ASCII_LETTER = re.compile(r"[A-Za-z]")


class PhoneResult(NamedTuple):
    """A reading of a phone number (a named tuple: made in half a frozen dataclass's time,
    once for each of a day's million numbers)."""

    e164: str | None
    region: str | None  # ISO country of the number, e.g. "FR"
    reason: str | None  # why it is not usable, when e164 is None


def normalise(raw: str | None, default_region: str | None) -> PhoneResult:
    """Parse a number written in E.164 or national format (national numbers read in default_region).

    Reasons when unusable: phone_missing, phone_too_long, phone_has_letters, phone_unparseable,
    phone_invalid (libphonenumber's metadata says no such number exists, or it has more digits
    than E.164's 15, which libphonenumber's parser admits for a few German numbers).
    """
    if raw is None:
        return PhoneResult(None, None, "phone_missing")
    text = str(raw).strip()
    if not text:
        return PhoneResult(None, None, "phone_missing")
    if len(text) > MAX_PHONE_INPUT:
        return PhoneResult(None, None, "phone_too_long")
    region = default_region.upper() if default_region else None
    if region not in phonenumbers.SUPPORTED_REGIONS:
        region = None
    return _normalise(text, region)


@lru_cache(maxsize=65536)
def _normalise(text: str, default_region: str | None) -> PhoneResult:
    if _ASCII_LETTER.search(text) if text.isascii() else any(ch.isalpha() for ch in text):
        # libphonenumber would read vanity letters as digits: a typo must not reach a stranger.
        return PhoneResult(None, None, "phone_has_letters")
    if text.startswith("00"):
        # The international prefix of most countries; libphonenumber only knows it for the region.
        text = "+" + text[2:]
    # Most stored numbers are in E.164 or in their region's national form: read without the
    # parser of free text (three times the validation's cost).
    known = _read_e164(text) if text.startswith("+") else _read_national(text, default_region)
    if known is not None:
        return known
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return PhoneResult(None, None, "phone_unparseable")
    region = _valid_in_region(number)
    e164 = _e164(number)
    if region is None or len(e164) > E164_MAX_LENGTH:
        # Too long for E.164, it could not be sent, and the blocking check would stop the day.
        return PhoneResult(None, None, "phone_invalid")
    return PhoneResult(e164, region, None)


def _read_e164(text: str) -> PhoneResult | None:
    """A valid number written in E.164, separators dropped, or None: the parser reads the rest."""
    # Written compact, as most are, it need not be copied without separators.
    compact = text if E164_SHAPE.fullmatch(text) else text.translate(_SEPARATORS)
    parts = _e164_parts(compact)
    if parts is None:
        return None
    region = _region_if_valid(*parts)
    return None if region is None else PhoneResult(compact, region, None)


def _read_national(text: str, region: str | None) -> PhoneResult | None:
    """A valid number in `region`'s national form, separators dropped: its national prefix, then
    the national number ("0612345678" in France, "07911 123456" in Britain), or the national
    number alone ("612345678" in Spain, "(202) 555-0143" in the US); None: the parser reads the
    rest.

    Read as libphonenumber's parser reads it (_national_form), from digits that begin with
    neither the region's international prefix nor its country code: the parser strips a prefix
    when the number left matches the region's general description (a number valid in the region
    does; where regions share the country code it is checked), and its length is then possible,
    never one only dialled locally; digits its prefix does not begin are the national number.
    Where regions share the country code the number's region is then found from its digits (a
    Jersey mobile read in Britain). Tests compare this with the parser on every region's example
    numbers and on random digits and separators."""
    form = None if region is None else _national_form(region)
    if form is None:
        return None
    compact = text.translate(_SEPARATORS)
    if (
        not (compact.isascii() and compact.isdigit())
        or compact.startswith(form.country_digits)
        or form.international.match(compact)
    ):
        return None
    prefix = None if form.prefix is None else form.prefix.match(compact)
    nsn = compact[prefix.end() :] if prefix is not None else compact
    if not nsn.strip("0"):  # nothing left, or zeros alone: never valid
        return None
    if form.shared and len(nsn) < len(compact) and not _matches(nsn, form.general):
        # The parser strips by the region's own description, whichever region the number is of.
        found = None
    else:
        found = _region_if_valid(form.country_code, nsn)
    e164 = f"+{form.country_digits}{nsn}"
    if found is None or len(e164) > E164_MAX_LENGTH:
        return None
    return PhoneResult(e164, found, None)


@dataclass(frozen=True)
class _NationalForm:
    """A region's national form as _read_national reads it."""

    country_code: int
    country_digits: str
    # The region's national_prefix_for_parsing: what the parser strips, a carrier code with it
    # (None: the region has no prefix).
    prefix: re.Pattern[str] | None
    international: re.Pattern[str]
    # Whether other regions share the country code, and the region's general description.
    shared: bool
    general: _Pattern


@cache  # bounded by the metadata: a few hundred regions
def _national_form(region: str) -> _NationalForm | None:
    """None where the parser's reading of the national form is more than a prefix stripped or
    none: where it transforms the prefix (Argentina's 15, Brazil, Japan). A carrier code the
    prefix pattern holds in a group (Australia's 1831) is stripped with it. Where the prefix is
    the country code itself (+1's 1), a text with it goes to the parser (_read_national)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    patterns = None if metadata is None else region_patterns(metadata.country_code, region)
    if metadata is None or patterns is None:
        return None
    parsing = metadata.national_prefix_for_parsing
    prefix = re.compile(parsing) if parsing else None
    if (
        metadata.national_prefix_transform_rule
        # A valid number of a length only dialled locally would keep its prefix (none is today).
        or set(metadata.general_desc.possible_length_local_only or ())
        & set(metadata.general_desc.possible_length or ())
    ):
        return None
    return _NationalForm(
        country_code=metadata.country_code,
        country_digits=str(metadata.country_code),
        prefix=prefix,
        international=re.compile(metadata.international_prefix or "(?!)"),
        shared=only_region(metadata.country_code) is None,
        general=patterns[0],
    )


def _region_if_valid(country_code: int, nsn: str) -> str | None:
    """The region of the number (country code, national significant number) if it is valid."""
    region = only_region(country_code)
    if region is None:  # +1, +7, +44...: the number's own digits tell which region it is of
        return _valid_in_region(_phone_number(country_code, nsn))
    return region if _valid_nsn(country_code, region, nsn) else None


def only_region(country_code: int) -> str | None:
    """The region of a country code that has one (+33: "FR"; +800: "001"); None for several."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    return regions[0] if len(regions) == 1 else None


def _valid_in_region(number: phonenumbers.PhoneNumber) -> str | None:
    """The number's region when libphonenumber's metadata says it is valid, else None: its
    is_valid_number, the region found once (one of 25 for +1: half the cost) and the number's
    types tried most common first (region_patterns)."""
    region = phonenumbers.region_code_for_number(number)
    if region is None or not _valid_nsn(
        number.country_code, region, phonenumbers.national_significant_number(number)
    ):
        return None
    return region


def _valid_nsn(country_code: int, region: str, nsn: str) -> bool:
    """Whether libphonenumber's metadata says the national significant number `nsn` is valid in
    the region (region_patterns)."""
    patterns = region_patterns(country_code, region)
    if patterns is None:
        return False
    general, types = patterns
    if not _matches(nsn, general):
        return False
    for kind in types:  # noqa: SIM110  # a loop, not any() over a generator: half the cost
        if _matches(nsn, kind):
            return True
    return False


# A number type's description: the national number's possible lengths (empty: any) and pattern.
_Pattern = tuple[frozenset[int], re.Pattern[str]] | None


@cache  # bounded by the metadata: a few hundred regions
def region_patterns(country_code: int, region: str) -> tuple[_Pattern, tuple[_Pattern, ...]] | None:
    """The region's general description and those of its number types, mobile and fixed line
    first; None where libphonenumber's is_valid_number_for_region refuses the region.

    Its validation is "the general description matches and the number is of some type", found by
    trying the types in a fixed order, premium rate first: ten patterns for a mobile number.
    The same answer comes from the most common types first: two (docs/performance.md; a test
    compares both on every region's example numbers)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None or (
        region != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
        and country_code != phonenumbers.country_code_for_valid_region(region)
    ):
        return None
    # As libphonenumber: where mobile and fixed-line numbers share one pattern, the fixed line's
    # description alone is tried.
    mobile = None if metadata.same_mobile_and_fixed_line_pattern else metadata.mobile
    kinds = (
        mobile,
        metadata.fixed_line,
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
    )
    return _pattern(metadata.general_desc), tuple(_pattern(kind) for kind in kinds)


def _pattern(desc: phonenumbers.PhoneNumberDesc | None) -> _Pattern:
    if desc is None or not desc.national_number_pattern:
        return None
    return frozenset(desc.possible_length), re.compile(desc.national_number_pattern)


def _matches(nsn: str, pattern: _Pattern) -> bool:
    """libphonenumber's match of a national number to a description: lengths, then pattern."""
    if pattern is None:
        return False
    lengths, regex = pattern
    return (not lengths or len(nsn) in lengths) and regex.fullmatch(nsn) is not None


def is_valid_e164(value: str | None) -> bool:
    """True for a valid number written exactly in E.164 (what the pipeline stores and sends).

    libphonenumber's `is_valid_number`, apart from `normalise` and its cache: what an
    unsubscribe link's number is checked with, and the reference the tests hold the blocking
    check's column validation (`phone_columns.valid_e164`) to.
    """
    number = None if value is None else _digits_of_e164(value)
    return number is not None and phonenumbers.is_valid_number(number) and _e164(number) == value


def _digits_of_e164(text: str) -> phonenumbers.PhoneNumber | None:
    """The number `text` writes in E.164 (_e164_parts), or None; not validated."""
    parts = _e164_parts(text)
    return None if parts is None else _phone_number(*parts)


def _e164_parts(text: str) -> tuple[int, str] | None:
    """The country code and national significant number `text` writes in E.164 ("+", a country
    code that exists, digits only, not all of them zeros after it), or None; not validated.
    Written back in E.164 they are `text` again (the leading zeros after the country code are
    kept), so `normalise` need not format them to compare.

    Read from the digits instead of by `phonenumbers.parse`, whose reading of free text costs three
    times the validation: E.164 country codes are prefix-free, so the first one of 1-3 digits that
    exists is the number's. Callers validate the number as written, as libphonenumber's
    `is_valid_number` does; one that is not valid so goes to the parser (it may strip a national
    prefix after the country code: "+33 0612345678"). The parser also strips it from one that is:
    Belarus's 810 numbers (+375 810 ...), valid as written, it reads as +375 10..., not valid.
    Those are read as written, as libphonenumber's parser reads them in their national form
    ("8 810 ..." in Belarus), so that a stored number normalises to itself."""
    if len(text) > E164_MAX_LENGTH or not E164_SHAPE.fullmatch(text):
        return None
    digits = text[1:]
    for size in (1, 2, 3):
        country_code = _COUNTRY_CODES.get(digits[:size])
        if country_code is not None:
            break
    else:
        return None
    national = digits[size:]
    if not national.strip("0"):
        # None, or zeros alone: libphonenumber would write one zero more.
        return None
    return country_code, national


def _phone_number(country_code: int, nsn: str) -> phonenumbers.PhoneNumber:
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(nsn))
    if zeros := len(nsn) - len(nsn.lstrip("0")):
        # Italian numbers (and a few others) keep their leading zeros after the country code.
        number.italian_leading_zero = True
        number.number_of_leading_zeros = zeros
    return number


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def region_of(e164: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None


def mask(phone: str | None) -> str:
    """'+33612345678' -> '+336******78': enough to tell rows apart, not to call anyone."""
    if not phone:
        return ""
    text = str(phone)
    if len(text) <= 5:
        return "*" * len(text)
    # At most 12 stars: a hostile 10,000-character value must not flood the UI.
    return text[:4] + "*" * min(len(text) - 6, 12) + text[-2:]


# Phone numbers inside free text (a driver's error quoting a value, SQL parameters, an alert's
# detail): 7 digits or more, maybe a '+', with up to three spaces (no-break ones too), dots, dashes
# or brackets between them ("06 12 34 56 78", "(415) 555-0132", "415 - 555 - 0132"). Digits glued
# to a word count too: a driver may quote a value inside another. The one definition for all text:
# `reporting.redact` sets aside what it must keep readable (dates, identifiers) and calls
# `mask_phones_in`.
_PHONE_IN_TEXT = re.compile(r"\+?\(?\d(?:[ .()\-\u00a0]{0,3}\d){6,}")


def mask_phones_in(text: str) -> str:
    """Text for a log, an error or an alert, with anything that may be a phone number masked."""
    return _PHONE_IN_TEXT.sub(lambda m: mask(m.group()), text)


def wire_format(e164: str) -> str:
    """iAdvize takes numbers as digits with the country code and no '+'."""
    return e164.lstrip("+")


def masked_sample(
    rows: list[dict[str, Any]], phone_fields: tuple[str, ...] = ("recipient", "phone_raw")
) -> list[dict[str, Any]]:
    """Rows for UI metadata with phone numbers masked."""
    return [{k: (mask(v) if k in phone_fields else v) for k, v in row.items()} for row in rows]
