"""outbound_pipeline: daily proactive WhatsApp campaigns through iAdvize, as a Dagster code location.

`dagster ... -m outbound_pipeline` finds the code location here as `code_location`, resolved on first
access: importing any part of the package (phones, templates, the ledger) never builds the
definitions. (Not `defs`: that name is the `defs/` folder's subpackage once it is imported.)
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "code_location":
        from outbound_pipeline.definitions import defs

        return defs
    raise AttributeError(f"module 'outbound_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["code_location"]
