"""JSON text of the stages' values (template fields, parameters, consent records), written and read
by orjson: a tenth of the json module's cost to write, a third to a half to read, and the stages
make several calls a row (a million-customer day spent 6-8 s of its workers' CPU in the json
module).

What orjson cannot write exactly (an integer beyond 64 bits, a string with a lone surrogate, a type
it does not know) is written by the json module, in the same compact form (`{"a":"b"}`); text
orjson cannot read (NaN, which the json module used to write) or may not read exactly (an integer
beyond 64 bits, which it reads as a float) is read by the json module. Readers parse the text; text
written before, with spaces after its separators, reads the same."""

from __future__ import annotations

import json
from typing import Any

import orjson

_json_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_json_encode_sorted = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True
).encode
# orjson reads an integer beyond 64 bits as a float, its last digits lost: a value read with a
# float in it (or a nested value, not looked into) is read again by the json module. The stages'
# values are flat, and most hold no float: they are read once.
_READ_AGAIN = frozenset((float, dict, list))


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
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    items = value.values() if type(value) is dict else value if type(value) is list else (value,)
    if _READ_AGAIN.isdisjoint(map(type, items)):  # in C: a fifth of a microsecond
        return value
    return json.loads(text)
