"""The messages stage: each eligible audience row rendered into its template's parameters."""

from __future__ import annotations

from outbound_pipeline.messages.rendering import (
    LinkMaker,
    RenderSkip,
    UnsubscribeLinksUnavailable,
    campaign_arms,
    render,
    render_row,
    stored_summary,
)

__all__ = [
    "LinkMaker",
    "RenderSkip",
    "UnsubscribeLinksUnavailable",
    "campaign_arms",
    "render",
    "render_row",
    "stored_summary",
]
