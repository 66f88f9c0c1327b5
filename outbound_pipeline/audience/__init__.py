"""The audience stage: the campaign's query run for a day, each row given an eligibility verdict."""

from __future__ import annotations

from outbound_pipeline.audience.assignment import is_held_out, position, variant_for
from outbound_pipeline.audience.extraction import (
    CHUNK_ROWS,
    AudienceQueryError,
    Suppressed,
    extract,
    stored_summary,
    written_by_run,
)
from outbound_pipeline.audience.query import CONSENT_STATUS, audience_sql, required_columns
from outbound_pipeline.audience.rows import json_value
from outbound_pipeline.audience.verdicts import verdict
from outbound_pipeline.audience.verification import (
    SAMPLE_ROWS,
    Findings,
    invalid_recipients,
    prepare_phone_checks,
)

__all__ = [
    "Findings",
    "SAMPLE_ROWS",
    "invalid_recipients",
    "prepare_phone_checks",
    "AudienceQueryError",
    "CHUNK_ROWS",
    "CONSENT_STATUS",
    "Suppressed",
    "is_held_out",
    "position",
    "variant_for",
    "audience_sql",
    "extract",
    "json_value",
    "required_columns",
    "stored_summary",
    "verdict",
    "written_by_run",
]
