"""The whole configuration file: the brand's table names, the templates and the campaigns."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from outbound_pipeline.config.conversation_query import ConversationQuerySettings
from outbound_pipeline.config.fields import FieldErrors, StrictModel
from outbound_pipeline.config.models import Campaign, Template
from outbound_pipeline.config.validation import cross_reference_problems, find_template


class IAdvizeSection(StrictModel):
    """What the file says of the iAdvize API: the names of its conversation search query, which
    the preflight confirms by introspection (docs/conversations.md)."""

    conversations: ConversationQuerySettings = Field(default_factory=ConversationQuerySettings)


# The consent table's columns every consent record has (the contract's); consent_columns adds others.
CONSENT_BASE_COLUMNS = ("customer_id", "category", "status", "updated_at")


class OutboundConfig(StrictModel):
    """The whole file: templates and campaigns, plus the names of the brand's tables."""

    customers_table: str = Field(default="customers", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    consents_table: str = Field(default="whatsapp_consents", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    # A column of the consents table the brand's loader stamps with the time it wrote the row: the
    # polled consent check reads changes by it instead of updated_at (business time).
    consents_loaded_at_column: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    consent_columns: list[str] = Field(
        default_factory=list,
        description="Columns of the consents table that identify a consent record (an id, its "
        "source...): copied with it to every row it allowed (consent provenance).",
    )
    iadvize: IAdvizeSection = Field(default_factory=IAdvizeSection)
    templates: list[Template]
    campaigns: list[Campaign]

    @field_validator("consent_columns")
    @classmethod
    def _consent_columns(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
                raise ValueError(f"'{name}' is not a column name (letters, digits, underscores)")
            if name in CONSENT_BASE_COLUMNS:
                raise ValueError(f"'{name}' is always recorded: list only the other columns")
        if len(set(names)) != len(names):
            raise ValueError("a column is listed twice")
        return names

    @model_validator(mode="after")
    def _cross_references(self) -> OutboundConfig:
        problems = cross_reference_problems(self.templates, self.campaigns)
        if problems:
            raise FieldErrors(*problems)
        return self

    def template_for(self, campaign: Campaign) -> Template:
        return find_template(self.templates, campaign)

    def campaign(self, key: str) -> Campaign:
        for campaign in self.campaigns:
            if campaign.key == key:
                return campaign
        raise KeyError(key)
