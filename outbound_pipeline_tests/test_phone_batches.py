"""A chunk's phones read at once (`normalise_all`: the numbers written in E.164 by Arrow's RE2, the
rest one by one): the same readings as `normalise` of each, which test_phones.py holds equal to
libphonenumber's parser."""

from __future__ import annotations

from typing import Any

import phonenumbers
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from outbound_pipeline.whatsapp import normalise, normalise_all, phone_batches
from outbound_pipeline_tests.test_phones import (
    EDGE_PHONE_TEXTS,
    EXAMPLES_AND_NEIGHBOURS,
    PHONE_TEXTS,
    random_plus_numbers,
)


def _disagreements(
    raws: list[Any], countries: list[Any] | None = None, default: str | None = "FR"
) -> list[tuple[Any, Any, Any]]:
    """The values whose reading in a chunk differs from `normalise`'s alone: (value, alone, chunk)."""
    countries = countries if countries is not None else [None] * len(raws)
    together = normalise_all(raws, countries, default)
    out = []
    for raw, country, read in zip(raws, countries, together, strict=True):
        alone = normalise(None if raw is None else str(raw), _region(country, default))
        if read != alone:
            out.append((raw, alone, read))
    return out


def _region(country: Any, default: str | None) -> str | None:
    """The region a row's national number is read in, as the audience's verdicts read it before
    chunks were read at once: its country, a known ISO code whatever its case and spaces."""
    if isinstance(country, str) and country.strip().upper() in phonenumbers.SUPPORTED_REGIONS:
        return country.strip().upper()
    return default


def test_every_regions_examples_and_their_neighbours_read_as_one_at_a_time() -> None:
    # Every example of every region and type (shared codes +1, +7, +44, left to `normalise`;
    # Italian leading zeros; numbers of no country), each with a digit added, dropped, a 0 after
    # the country code and each other last digit: every description's patterns and lengths.
    ordered = EXAMPLES_AND_NEIGHBOURS
    assert _disagreements(ordered) == []
    # The column reads every valid one of a country code with one region, and no other.
    by_column = phone_batches._written_e164_regions(ordered)
    assert by_column == [_one_regions_valid_number(value) for value in ordered]
    assert sum(region is not None for region in by_column) > 4000


def _one_regions_valid_number(value: str) -> str | None:
    """The region of a valid number written in E.164 whose country code has one region."""
    read = normalise(value, None)
    if read.e164 != value:
        return None
    number = phonenumbers.parse(value, None)
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[number.country_code]
    return read.region if len(regions) == 1 else None


def test_random_numbers_of_every_country_code_read_as_one_at_a_time() -> None:
    values = random_plus_numbers(20261206, 20_000)
    by_column = phone_batches._written_e164_regions(values)
    assert by_column == [_one_regions_valid_number(value) for value in values]
    assert sum(r is not None for r in by_column) > 500
    assert _disagreements(values) == []


def test_the_columns_reading_is_of_valid_e164_alone() -> None:
    values = [
        "+33612345678",  # valid, France's one region: read by the column
        "+32470123456",  # Belgium
        "+33 6 12 34 56 78",  # separators: normalise reads it
        "+12015550123",  # +1 is shared by 25 regions: normalise reads it
        "+447911123456",  # +44 too
        "+3361234",  # too short: not valid, normalise says why
        "+330612345678",  # a national prefix after the country code: normalise's parser
        "+3300000000",  # zeros alone
        "+80000000000",  # zeros alone, of a pattern that admits them (+800)
        "0612345678",  # national form
        None,
        33612345678,  # not text
    ]
    regions = phone_batches._written_e164_regions(values)
    assert regions == ["FR", "BE", *[None] * 10]
    assert _disagreements(values) == []


@pytest.mark.parametrize("default", ["FR", "GB", None])
def test_national_numbers_are_read_in_each_rows_country(default: str | None) -> None:
    raws = [
        "0612345678",
        "07911 123456",
        "0470 12 34 56",
        "+33612345678",
        "612345678",
        "0612345678",
    ]
    countries = ["FR", " gb ", "be", "US", "XX", _Text("fr")]
    assert _disagreements(raws, countries, default) == []
    read = normalise_all(raws, countries, default)
    assert [r.e164 for r in read[:4]] == [
        "+33612345678",
        "+447911123456",
        "+32470123456",
        "+33612345678",
    ]
    assert read[5].e164 == "+33612345678"  # a text of a str subclass is a country too


class _Text(str):
    """A str subclass, as a driver may return one."""


def test_a_country_code_whose_pattern_re2_refuses_is_read_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # New metadata may hold a pattern RE2 cannot compile: that code's numbers go to `normalise`.
    from outbound_pipeline.whatsapp.phone_columns import described

    refused = described("(?<=6)12345678", [9])  # a look-behind: Python's re has it, RE2 not
    monkeypatch.setattr(phone_batches, "_reading", lambda code: ("FR", refused, (refused,)))
    values = ["+33612345678", "+32470123456", "+3361234"]
    assert phone_batches._written_e164_regions(values) == [None, None, None]
    assert [r.e164 for r in normalise_all(values, [None] * 3, None)] == [
        "+33612345678",
        "+32470123456",
        None,
    ]


@given(
    values=st.lists(
        st.one_of(PHONE_TEXTS, st.integers()),
        max_size=40,
    )
)
@example(values=EDGE_PHONE_TEXTS)
@example(values=["+33612345678", "\ud800", b"+33612345678"])
@settings(max_examples=300)
def test_any_value_reads_as_one_at_a_time(values: list[Any]) -> None:
    assert _disagreements(values) == []
