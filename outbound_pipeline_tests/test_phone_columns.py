"""Valid E.164 numbers a whole column at a time (Arrow's RE2 on libphonenumber's metadata): the
same answers as `is_valid_e164`, which test_phones.py holds equal to libphonenumber's parser."""

from __future__ import annotations

import random

import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import example, given, settings
from hypothesis import strategies as st

from outbound_pipeline.audience import Findings, invalid_recipients
from outbound_pipeline.whatsapp import is_valid_e164, phone_columns
from outbound_pipeline.whatsapp.phone_columns import valid_e164
from outbound_pipeline_tests.test_phones import (
    EDGE_PHONE_TEXTS,
    EXAMPLES_AND_NEIGHBOURS,
    PHONE_TEXTS,
    random_plus_numbers,
)


def _disagreements(values: list[str | None]) -> list[tuple[str | None, bool]]:
    """The values the column's answer differs on from `is_valid_e164`'s, with the column's."""
    column = valid_e164(pa.array(values, pa.string())).to_pylist()
    return [(v, c) for v, c in zip(values, column, strict=True) if c is not is_valid_e164(v)]


def test_every_pattern_of_libphonenumbers_metadata_compiles_in_arrows_re2() -> None:
    # A pattern RE2 refuses would fail the check of every number of its country code.
    patterns = []
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        for region in phone_columns._regions(str(code)):
            described = [region.general, *region.types]
            patterns += [d.pattern for d in described if d is not None]
            patterns += [region.leading_digits] if region.leading_digits else []
    assert len(patterns) > 1000
    for pattern in patterns:
        pc.match_substring_regex(pa.array(["0"]), pattern)


def test_every_regions_examples_and_their_neighbours_are_judged_as_one_at_a_time() -> None:
    # Every example of every region and type (shared codes +1, +7, +44; Italian leading zeros;
    # numbers of no country), each with a digit added, dropped, a 0 after the country code and
    # each other last digit: the patterns and possible lengths of every description are used.
    ordered = EXAMPLES_AND_NEIGHBOURS
    assert sum(is_valid_e164(v) for v in ordered) > 5000
    assert _disagreements(ordered) == []


def test_random_numbers_of_every_country_code_are_judged_as_one_at_a_time() -> None:
    values = random_plus_numbers(20261205, 40_000)
    assert sum(map(is_valid_e164, values)) > 1000
    assert _disagreements(values) == []


@given(
    values=st.lists(
        PHONE_TEXTS,
        max_size=40,
    )
)
@example(values=EDGE_PHONE_TEXTS)
@settings(max_examples=300)
def test_any_text_is_judged_as_one_at_a_time(values: list[str | None]) -> None:
    assert _disagreements(values) == []


def test_the_checks_chunks_find_the_same_rows_as_tuples_and_as_a_record_batch() -> None:
    rows = [
        (1, "+33612345678"),
        (2, "+33612345"),  # too short
        (3, None),
        (4, "+1 202 555 0143"),  # not E.164 as written
        (5, "+12025550143"),
        (6, "+44 20 7946 0958"),
    ]
    batch = pa.RecordBatch.from_pylist(
        [{"row_number": n, "recipient": r} for n, r in rows],
        schema=pa.schema([("row_number", pa.int64()), ("recipient", pa.string())]),
    )
    expected = [{"row_number": n, "recipient": r} for n, r in rows if n in (2, 3, 4, 6)]
    for chunk in (rows, batch):
        found = invalid_recipients(chunk)
        assert (found.total, found.sample) == (4, expected)
    # A stored value that is not text is no number.
    found = invalid_recipients([(7, 33612345678)])
    assert (found.total, found.sample) == (1, [{"row_number": 7, "recipient": 33612345678}])


def test_a_checks_findings_chunk_by_chunk_are_those_of_one_pass() -> None:
    # Every third recipient broken, the rows in no order: the count of them all, the first ten by
    # row number.
    rows = [(i, "+3361234" if i % 3 == 0 else f"+336123456{i % 100:02d}") for i in range(60)]
    random.Random(7).shuffle(rows)
    alone = invalid_recipients(rows)
    merged = Findings(order="row_number")
    for i in range(0, len(rows), 4):
        merged.merge(invalid_recipients(rows[i : i + 4]))
    assert (merged.total, merged.sample) == (alone.total, alone.sample)
    assert alone.total == 20
    assert [r["row_number"] for r in alone.sample] == list(range(0, 30, 3))
