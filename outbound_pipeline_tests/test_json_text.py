"""The stages' JSON: orjson's text, and the json module's for what orjson refuses or cannot read."""

from __future__ import annotations

import json
import math

from outbound_pipeline.json_text import from_json, to_json, to_sorted_json


def test_values_come_back_as_they_went_in_with_their_text_unescaped() -> None:
    fields = {"first_name": 'Émilie "Mimi"\n', "store": "東京 🛍️", "n": 3, "ok": True, "x": None}
    text = to_json(fields)
    assert "Émilie" in text and "東京" in text  # not \u-escaped: what an analyst reads
    assert from_json(text) == fields == json.loads(text)


def test_what_orjson_refuses_is_written_by_the_json_module() -> None:
    # An integer beyond 64 bits (Snowflake's NUMBER(38) comes back as one) and a lone surrogate.
    huge = {"customer": 10**30, "note": "a\ud800b"}
    assert json.loads(to_json(huge)) == huge
    assert from_json(to_json(huge)) == huge
    assert json.loads(to_sorted_json(huge)) == huge


def test_sorted_text_is_the_same_for_the_same_values_whatever_their_order() -> None:
    assert to_sorted_json({"b": 1, "a": 2}) == to_sorted_json({"a": 2, "b": 1}) == '{"a":2,"b":1}'


def test_nan_is_written_as_null_and_nan_written_before_is_still_read() -> None:
    assert from_json(to_json([math.nan, math.inf, "x"])) == [None, None, "x"]
    read = from_json('["NaN", NaN]')  # what the json module used to write
    assert read[0] == "NaN" and math.isnan(read[1])
