"""The campaign configuration a data team writes: typed models for `templates:` and `campaigns:`,
checked against each other, loaded from a YAML file."""

from __future__ import annotations

from outbound_pipeline.config.conversation_query import (
    ARGUMENTS,
    FILTER_KEYS,
    NODE_FIELDS,
    ConversationQuerySettings,
    selection_tree,
)
from outbound_pipeline.config.loading import BUNDLED_CONFIG, ConfigError, load_config, parse_config
from outbound_pipeline.config.models import (
    Arm,
    Campaign,
    QuietHours,
    Template,
    Variables,
    VariableSource,
    Variant,
)
from outbound_pipeline.config.outbound_config import OutboundConfig

__all__ = [
    "ARGUMENTS",
    "FILTER_KEYS",
    "NODE_FIELDS",
    "ConversationQuerySettings",
    "selection_tree",
    "Arm",
    "BUNDLED_CONFIG",
    "Campaign",
    "ConfigError",
    "OutboundConfig",
    "QuietHours",
    "Template",
    "VariableSource",
    "Variables",
    "Variant",
    "load_config",
    "parse_config",
]
