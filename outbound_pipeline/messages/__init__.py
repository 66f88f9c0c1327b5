"""messages."""

from __future__ import annotations

from outbound_pipeline.messages.rendering import (
    RenderSkip,
    format_value,
    render,
    render_row,
    stored_summary,
)

__all__ = [
    "RenderSkip",
    "format_value",
    "render",
    "render_row",
    "stored_summary",
]
