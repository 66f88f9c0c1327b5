"""JSON text of the stages' values (template fields, parameters, consent records), written and read
by orjson: a tenth of the json module's cost a call, and the stages make several a row (a
million-customer day spent 6-8 s of its workers' CPU in the json module).

What orjson cannot write exactly (an integer beyond 64 bits, a string with a lone surrogate, a type
it does not know) is written by the json module, in the same compact form (`{"a":"b"}`); text
orjson cannot read exactly (NaN, which the json module used to write; a number of 19 digits or
more, which orjson reads as a float) is read by the json module. Readers parse the text; text
written before, with spaces after its separators, reads the same."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_json_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_json_encode_sorted = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True
).encode
# Beyond orjson's integers (-2**63 .. 2**64 - 1): read as floats, their last digits lost.
_LONG_NUMBER = re.compile(r"\d{19}")


def to_json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return _json_encode(value)


def to_sorted_json(value: Any) -> str:
    """to_json with a dict's keys in order: the same values give the same text."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return _json_encode_sorted(value)


def from_json(text: str) -> Any:
    if _LONG_NUMBER.search(text):
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
