"""outbound_pipeline: daily proactive WhatsApp campaigns through iAdvize, as a Dagster code location.

`code_location` (the definitions, for `dagster ... -m outbound_pipeline`) is resolved on first
access, so importing any part of the package (phones, templates, the ledger) never builds the
definitions. Its name is not `defs`: once loaded, the subpackage `outbound_pipeline.defs` takes that
attribute, and Dagster, which looks the attribute up again by name, would find the subpackage.
"""

from __future__ import annotations

from typing import Any

CODE_LOCATION = "code_location"


def __getattr__(name: str) -> Any:
    if name == CODE_LOCATION:
        from outbound_pipeline.definitions import defs

        return defs
    raise AttributeError(f"module 'outbound_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [CODE_LOCATION]
