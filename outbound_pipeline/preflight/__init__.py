"""The launch checklist of a campaign: what to confirm before switching its schedule on.

- `checklist.py`: run_checklist, the items in order (the order is described there);
- `items.py`: an item and its status, the checks of dates, template and halts, the Markdown table;
- `preview.py`: the first eligible row of the day that renders (read only), sample values;
- `api_checks.py`: credentials, the conversation query's names by introspection, and the test send
  to the campaign's test recipients, recorded apart from the ledger.
"""

from __future__ import annotations

from outbound_pipeline.preflight.checklist import ChecklistOptions, run_checklist
from outbound_pipeline.preflight.items import (
    FAIL,
    MANUAL,
    PASS,
    SKIPPED,
    WARN,
    Item,
    ItemStatus,
    checklist_markdown,
)
from outbound_pipeline.preflight.preview import Preview, first_eligible_preview, sample_parameters

__all__ = [
    "ChecklistOptions",
    "FAIL",
    "Item",
    "ItemStatus",
    "MANUAL",
    "PASS",
    "Preview",
    "SKIPPED",
    "WARN",
    "checklist_markdown",
    "first_eligible_preview",
    "run_checklist",
    "sample_parameters",
]
