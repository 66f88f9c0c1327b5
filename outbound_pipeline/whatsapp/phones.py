"""Phone numbers: normalisation to E.164 with libphonenumber, and masking for logs and UI."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers

# libphonenumber refuses inputs longer than 250 characters anyway; refusing them before the cache
# keeps hostile 10,000-character values out of it (the cache holds its keys).
MAX_PHONE_INPUT = 64
E164_MAX_LENGTH = 16  # "+" and at most 15 digits


@dataclass(frozen=True)
class PhoneResult:
    e164: str | None
    region: str | None  # ISO country of the number, e.g. "FR"
    reason: str | None  # why it is not usable, when e164 is None


def normalise(raw: str | None, default_region: str | None) -> PhoneResult:
    """Parse a number written in E.164 or national format (national numbers read in default_region).

    Reasons when unusable: phone_missing, phone_too_long, phone_has_letters, phone_unparseable,
    phone_invalid (libphonenumber's metadata says no such number exists).
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
    if any(ch.isalpha() for ch in text):
        # libphonenumber would read vanity letters as digits: a typo must not reach a stranger.
        return PhoneResult(None, None, "phone_has_letters")
    if text.startswith("00"):
        # The international prefix of most countries; libphonenumber only knows it for the region.
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return PhoneResult(None, None, "phone_unparseable")
    # is_valid_number is exactly this, and finding the region (one of 25 for +1) is half its cost.
    region = phonenumbers.region_code_for_number(number)
    if region is None or not phonenumbers.is_valid_number_for_region(number, region):
        return PhoneResult(None, None, "phone_invalid")
    return PhoneResult(
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), region, None
    )


def is_valid_e164(value: str | None) -> bool:
    """True for a valid number written exactly in E.164 (what the pipeline stores and sends).

    libphonenumber straight, apart from `normalise` and its cache: the blocking check calls it on
    every stored recipient to confirm independently what extraction wrote.
    """
    if not value or not value.startswith("+") or len(value) > E164_MAX_LENGTH:
        return False
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return (
        phonenumbers.is_valid_number(number)
        and phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == value
    )


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
