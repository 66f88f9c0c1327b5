"""audience."""

from __future__ import annotations

from outbound_pipeline.audience.extraction import (
    CHUNK_ROWS,
    CONSENT_STATUS,
    AudienceQueryError,
    _jsonable,
    audience_sql,
    extract,
    required_columns,
    stored_summary,
    verdict,
    written_by_run,
)

__all__ = [
    "AudienceQueryError",
    "CHUNK_ROWS",
    "CONSENT_STATUS",
    "_jsonable",
    "audience_sql",
    "extract",
    "required_columns",
    "stored_summary",
    "verdict",
    "written_by_run",
]
