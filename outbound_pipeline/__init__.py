"""outbound_pipeline: daily proactive WhatsApp campaigns through iAdvize, as a Dagster code location."""

from outbound_pipeline.definitions import defs

__all__ = ["defs"]
