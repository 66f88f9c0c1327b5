"""JSON text of the stages' values (template fields, parameters, consent records), written and read
by orjson: a tenth of the json module's cost a call, and the stages make several a row (a
million-customer day spent 6-8 s of its workers' CPU in the json module).

Any value orjson refuses (an integer beyond 64 bits, a string with a lone surrogate, a type it
does not know) goes through the json module as before, and any text it cannot read (NaN, which
the json module used to write) is read by the json module: what was accepted still is. The text
is compact (`{"a":"b"}`); readers parse it, none compares it. NaN and infinities are written as
null: JSON has no such number, and a variable holding one is missing, not "nan"."""

from __future__ import annotations

import json
from typing import Any

import orjson

_json_encode = json.JSONEncoder(ensure_ascii=False).encode
_json_encode_sorted = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


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
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
