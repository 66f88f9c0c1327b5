"""outbound_pipeline: daily proactive WhatsApp campaigns through iAdvize, as a Dagster code location.

`defs` (the code location, for `dagster ... -m outbound_pipeline`) is resolved on first access, so
importing any part of the package (phones, templates, the ledger) never builds the definitions.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from outbound_pipeline.definitions import defs

        return defs
    raise AttributeError(f"module 'outbound_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["defs"]
