"""`phones.normalise` for a chunk's phones at once: the numbers already written in E.164 (most of
a real audience's, 80 % of the benchmark's) validated a column at a time by Arrow's RE2, the rest
read one by one by `normalise`.

The same answer as `normalise` on every value, from its own reading of libphonenumber's metadata
(`phones.region_patterns`: the one region of the number's country code, its general description,
then its number types, mobile and fixed line first); a number of a country code several regions
share (+1, +7, +44...), one that is not valid as written, and every other form go to
`normalise`. The blocking check reads the stored numbers its own way (`phone_columns.valid_e164`:
libphonenumber's order of types, the regions of a shared code by their leading digits); the two
share RE2, how a country code is read off the text and how a description is written and matched
(`phone_columns`, which says what that costs the check's independence for these numbers).
`test_phone_batches.py` holds this equal to `normalise` on every region's example numbers, their
neighbours and random values.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

import phonenumbers

from outbound_pipeline.whatsapp.phones import (
    PhoneResult,
    normalise,
    only_region,
    region_patterns,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from outbound_pipeline.whatsapp.phone_columns import Description


def normalise_all(
    raws: Sequence[Any], countries: Sequence[Any], default_region: str | None
) -> list[PhoneResult]:
    """`normalise` of each phone: a national number read in its row's country when that is an ISO
    code libphonenumber knows (whatever its case, spaces around it), else in `default_region`."""
    written = _written_e164_regions(raws)
    return [
        PhoneResult(raw, region, None)
        if region is not None
        else normalise(None if raw is None else str(raw), _region(country, default_region))
        for raw, country, region in zip(raws, countries, written, strict=True)
    ]


def _region(country: Any, default_region: str | None) -> str | None:
    if isinstance(country, str):
        code = country.strip().upper()
        if code in phonenumbers.SUPPORTED_REGIONS:
            return code
    return default_region


def _written_e164_regions(raws: Sequence[Any]) -> list[str | None]:
    """For each phone, its region when it is text that is a valid number written exactly in
    E.164 (`normalise` gives it back as it is) of a country code with one region; else None."""
    # Imported here: pyarrow is 130 ms that loading the definitions need not pay.
    import pyarrow as pa
    import pyarrow.compute as pc

    from outbound_pipeline.whatsapp.phone_columns import national_numbers

    regions: list[str | None] = [None] * len(raws)
    try:
        # Another type (an int, bytes) is no text: `normalise` reads it.
        texts = pa.array([raw if type(raw) is str else None for raw in raws], pa.string())
    except (pa.ArrowException, UnicodeError):
        # A lone surrogate (no UTF-8 for Arrow): the whole chunk is read by `normalise`.
        return regions
    for code, mine, national in national_numbers(texts):
        reading = _reading(code)
        if reading is None:
            continue
        region, general, types = reading
        try:
            valid = _valid(national, general, types)
        except pa.ArrowInvalid:  # a pattern RE2 refuses (new metadata): `normalise` reads them
            continue
        for i in pc.indices_nonzero(mine).filter(valid).to_pylist():
            regions[i] = region
    return regions


def _valid(
    national: pa.Array, general: Description, types: tuple[Description, ...]
) -> pa.BooleanArray:
    """`phones._valid_nsn` of each national number: the general description, then a type, the
    later types tried only on the numbers the earlier ones did not match."""
    import pyarrow.compute as pc

    from outbound_pipeline.whatsapp.phone_columns import matches

    lengths = pc.utf8_length(national)
    # Zeros alone are no number `normalise` reads as written (phones._e164_parts).
    valid = pc.and_(
        pc.match_substring_regex(national, "[1-9]"), matches(national, lengths, general)
    )
    typed = matches(national, lengths, types[0])
    for description in types[1:]:
        untyped = pc.and_(valid, pc.invert(typed))
        if not pc.any(untyped).as_py():
            break
        found = matches(national.filter(untyped), lengths.filter(untyped), description)
        typed = pc.replace_with_mask(typed, untyped, found)
    return pc.and_(valid, typed)


@cache  # bounded by the metadata: a few hundred country codes
def _reading(code: str) -> tuple[str, Description, tuple[Description, ...]] | None:
    """The region of country code `code` ("33") and its descriptions as `normalise` reads them;
    None where it has several regions, or none `normalise` validates in (it reads those)."""
    from outbound_pipeline.whatsapp.phone_columns import described

    country_code = int(code)
    region = only_region(country_code)
    patterns = None if region is None else region_patterns(country_code, region)
    if region is None or patterns is None:
        return None
    general, types = patterns
    kinds = tuple(described(p[1].pattern, p[0]) for p in types if p is not None)
    if general is None or not kinds:
        return None
    return region, described(general[1].pattern, general[0]), kinds
