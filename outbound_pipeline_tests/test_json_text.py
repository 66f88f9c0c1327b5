"""The stages' JSON: orjson's text, and the json module's for what orjson cannot write or read
exactly."""

from __future__ import annotations

import json
import math

import numpy as np

from outbound_pipeline.audience import json_value
from outbound_pipeline.json_text import from_json, to_json, to_sorted_json


def test_values_come_back_as_they_went_in_with_their_text_unescaped() -> None:
    fields = {"first_name": 'Émilie "Mimi"\n', "store": "東京 🛍️", "n": 3, "ok": True, "x": None}
    text = to_json(fields)
    assert "Émilie" in text and "東京" in text  # not \\u-escaped: what an analyst reads
    assert from_json(text) == fields == json.loads(text)


def test_integers_beyond_64_bits_are_written_and_read_exactly() -> None:
    # Snowflake's NUMBER(38) comes back as such an integer; orjson reads one as a float.
    for number in (10**30, 2**64, -(2**63) - 1, 12345678901234567890123):
        text = to_json({"customer": number})
        assert text == f'{{"customer":{number}}}'  # the json module, in the same compact form
        assert from_json(text) == {"customer": number}
        assert from_json(f'{{"customer": {number}}}') == {"customer": number}  # written before


def test_a_lone_surrogate_is_written_by_the_json_module() -> None:
    value = {"b": "a\ud800b", "a": 1}
    assert from_json(to_json(value)) == value
    assert to_sorted_json(value) == '{"a":1,"b":"a\ud800b"}'  # the json module's, sorted


def test_sorted_text_is_the_same_for_the_same_values_whatever_their_order() -> None:
    assert to_sorted_json({"b": 1, "a": 2}) == to_sorted_json({"a": 2, "b": 1}) == '{"a":2,"b":1}'


def test_nan_is_a_missing_value_whatever_writes_it_and_nan_written_before_is_still_read() -> None:
    # A NumPy float (orjson refuses it) and a big integer beside it: the json module writes them.
    fields = {c: json_value(v) for c, v in {"x": np.float64("nan"), "y": 10**30}.items()}
    assert from_json(to_json(fields)) == {"x": None, "y": 10**30}
    assert json_value(np.float64(1.5)) == 1.5 and type(json_value(np.float64(1.5))) is float
    assert from_json(to_json([json_value(math.inf), "x"])) == [None, "x"]
    read = from_json('["NaN", NaN]')  # what the json module used to write
    assert read[0] == "NaN" and math.isnan(read[1])


def test_a_nested_integer_beyond_64_bits_and_floats_are_read_exactly() -> None:
    assert from_json('{"a": {"b": [99999999999999999999]}}') == {"a": {"b": [99999999999999999999]}}
    assert from_json('[0.1, 1e300, "x", 7]') == [0.1, 1e300, "x", 7]
