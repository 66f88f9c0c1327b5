"""config."""

from __future__ import annotations

from outbound_pipeline.config.models import (
    BUNDLED_CONFIG,
    Campaign,
    ConfigError,
    OutboundConfig,
    QuietHours,
    Template,
    Variables,
    VariableSource,
    load_config,
    parse_config,
)

__all__ = [
    "BUNDLED_CONFIG",
    "Campaign",
    "ConfigError",
    "OutboundConfig",
    "QuietHours",
    "Template",
    "VariableSource",
    "Variables",
    "load_config",
    "parse_config",
]
