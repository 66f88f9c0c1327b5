"""The messages stage: each eligible audience row rendered into its template's parameters."""

from __future__ import annotations

from outbound_pipeline.messages.parameters import (
    LinkMaker,
    RenderSkip,
    UnsubscribeLinksUnavailable,
    render_row,
)
from outbound_pipeline.messages.rendering import campaign_arms, render, stored_summary
from outbound_pipeline.messages.verification import CHECKED_COLUMNS, parameter_findings

__all__ = [
    "CHECKED_COLUMNS",
    "parameter_findings",
    "LinkMaker",
    "RenderSkip",
    "UnsubscribeLinksUnavailable",
    "campaign_arms",
    "render",
    "render_row",
    "stored_summary",
]
