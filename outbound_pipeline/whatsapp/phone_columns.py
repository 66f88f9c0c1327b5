"""Which texts of a column are valid numbers written in E.164, a whole column at a time.

The answer of `phones.is_valid_e164` (libphonenumber's `is_valid_number` on the number the text
writes, and the text that number's E.164), from libphonenumber's own metadata, matched by Arrow's
RE2 over the column instead of Python's `re` one number at a time: 0.45 us a French number
against 6.5, 0.8 us a US one against 10.6 (50,000 a column).
libphonenumber's C++ library matches the same patterns with RE2; every one of them compiles there.
The blocking check of a day's phones runs on this. Extraction reads numbers one by one in Python
(`phones.normalise`), but a chunk's numbers written in E.164 of a country code with one region it
validates with RE2 too (`phone_batches`), from the metadata as `normalise` reads it (another order
of types; a shared code's numbers left to `normalise`). For those numbers the two share RE2, how a
country code and the national number are read off the text (`national_numbers`) and how a
description is written and matched (`described`, `matches`): a pattern RE2 reads otherwise than
Python's `re`, or a fault in those, would pass both. What holds them to libphonenumber is the
tests: `test_phone_columns.py` holds this equal to `is_valid_e164` (libphonenumber's own
validation, in Python's `re`) and `test_phone_batches.py` holds extraction's reading equal to
`normalise`, each on every region's example numbers, their neighbours and random numbers, with the
metadata installed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from functools import cache
from typing import NamedTuple

import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from outbound_pipeline.whatsapp.phones import E164_SHAPE

# The E.164 form, anchored: RE2 finds a match anywhere unless told.
_E164_SHAPE = f"^(?:{E164_SHAPE.pattern})$"
# What libphonenumber's number types are, in the order `_number_type_helper` tries them: a number
# is valid when it matches its region's general description and one of these.
_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)


class Description(NamedTuple):
    """A number description's pattern (anchored for a full match) and its possible lengths (none:
    any the general description admits)."""

    pattern: str
    lengths: pa.Array | None


class _Region(NamedTuple):
    """What tells a region's valid numbers: the leading digits that claim a number for it among
    the regions sharing its country code (None: its numbers' validity claims them)."""

    leading_digits: str | None
    general: Description | None
    types: tuple[Description, ...]


def valid_e164(texts: pa.Array | pa.ChunkedArray) -> pa.BooleanArray:
    """For each text, whether it is a valid number written exactly in E.164 (`is_valid_e164`);
    False for a null."""
    texts = _one_array(texts).cast(pa.string())
    valid = pa.array([False] * len(texts), pa.bool_())
    for code, mine, national in national_numbers(texts):
        valid = pc.replace_with_mask(valid, mine, _valid_national(national, code))
    return valid


def national_numbers(texts: pa.Array) -> Iterator[tuple[str, pa.BooleanArray, pa.Array]]:
    """For each country code the texts write in E.164's form (`country_codes`): the code ("33"),
    which texts write it, and their national numbers, the digits after it."""
    codes = country_codes(texts)
    for code in pc.unique(codes.drop_null()).to_pylist():
        mine = pc.fill_null(pc.equal(codes, code), False)
        yield code, mine, pc.utf8_slice_codeunits(texts.filter(mine), len(code) + 1)


def _one_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return pa.concat_arrays(values.chunks) if values.num_chunks else pa.array([], pa.string())
    return values


def country_codes(texts: pa.Array) -> pa.Array:
    """Each text's country code as written ("33") when it has E.164's form ("+" and 2-15 digits),
    null for another text or a code that does not exist. E.164's codes are prefix-free: at most
    one of 1, 2 or 3 digits exists."""
    shaped = pc.fill_null(pc.match_substring_regex(texts, _E164_SHAPE), False)
    codes = pa.nulls(len(texts), pa.string())
    for size in (3, 2, 1):
        prefix = pc.utf8_slice_codeunits(texts, 1, 1 + size)
        known = pc.and_(shaped, pc.is_in(prefix, value_set=_codes_of_size(size)))
        codes = pc.if_else(known, prefix, codes)
    return codes


@cache
def _codes_of_size(size: int) -> pa.Array:
    return pa.array(
        [str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE if len(str(code)) == size]
    )


def _valid_national(national: pa.Array, code: str) -> pa.BooleanArray:
    """Which national significant numbers are valid under country code `code`: as
    `is_valid_number`, in the region `region_code_for_number` finds (the only one of the code; of
    several, the first whose leading digits start the number or, without them, that validates
    it)."""
    # Zeros alone are no number libphonenumber would write back so (phones._e164_parts).
    unclaimed = pc.match_substring_regex(national, "[1-9]")
    regions = _regions(code)
    if len(regions) == 1:
        return pc.and_(unclaimed, _valid_in(national, regions[0]))
    # Each region validates only the numbers it claims (+1 has 25 regions): not every number
    # against every region's patterns.
    none = pa.array([False] * len(national), pa.bool_())
    valid = none
    for region in regions:
        if not pc.any(unclaimed).as_py():
            break
        if region.leading_digits is None:
            validated = _valid_in(national.filter(unclaimed), region)
            claimed = pc.replace_with_mask(none, unclaimed, validated)
            valid = pc.or_(valid, claimed)
        else:
            leading = pc.match_substring_regex(national, region.leading_digits)
            claimed = pc.and_(unclaimed, leading)
            validated = _valid_in(national.filter(claimed), region)
            valid = pc.replace_with_mask(valid, claimed, validated)
        unclaimed = pc.and_(unclaimed, pc.invert(claimed))
    return valid


def _valid_in(national: pa.Array, region: _Region) -> pa.BooleanArray:
    """libphonenumber's `_number_type_helper(...) != UNKNOWN`: the general description and one
    of the types' match."""
    typed = pa.array([False] * len(national), pa.bool_())
    if region.general is None:
        return typed
    lengths = pc.utf8_length(national)
    for description in region.types:
        typed = pc.or_(typed, matches(national, lengths, description))
    return pc.and_(matches(national, lengths, region.general), typed)


def matches(national: pa.Array, lengths: pa.Array, description: Description) -> pa.BooleanArray:
    """libphonenumber's match of national numbers (their `lengths` in characters) to a
    description: a possible length, and the pattern."""
    matched = pc.match_substring_regex(national, description.pattern)
    if description.lengths is None:
        return matched
    return pc.and_(matched, pc.is_in(lengths, value_set=description.lengths))


@cache
def _regions(code: str) -> tuple[_Region, ...]:
    """The regions of country code `code`, in libphonenumber's order, as their metadata says."""
    number = int(code)
    out = []
    for name in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[number]:
        if name == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
            metadata = phonenumbers.PhoneMetadata.metadata_for_nongeo_region(number)
        else:
            metadata = phonenumbers.PhoneMetadata.metadata_for_region(name)
        if metadata is None:
            continue
        # Where mobile numbers share the fixed lines' pattern, libphonenumber tries only the latter.
        kinds = _TYPES[:-1] if metadata.same_mobile_and_fixed_line_pattern else _TYPES
        types = (_description(getattr(metadata, kind)) for kind in kinds)
        out.append(
            _Region(
                leading_digits=None
                if metadata.leading_digits is None
                else f"^(?:{metadata.leading_digits})",
                general=_description(metadata.general_desc),
                types=tuple(t for t in types if t is not None),
            )
        )
    return tuple(out)


def _description(desc: phonenumbers.PhoneNumberDesc | None) -> Description | None:
    """A description as `_is_number_matching_desc` reads it; None where it matches nothing."""
    if desc is None or not desc.national_number_pattern:
        return None
    return described(desc.national_number_pattern, desc.possible_length)


def described(pattern: str, lengths: Collection[int]) -> Description:
    """A national number pattern (matched whole) and its possible lengths (none: any)."""
    return Description(
        f"^(?:{pattern})$", pa.array(sorted(lengths), pa.int32()) if lengths else None
    )
