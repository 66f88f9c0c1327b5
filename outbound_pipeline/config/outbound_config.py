"""The whole configuration file: the brand's table names, the templates and the campaigns."""

from __future__ import annotations

from pydantic import Field, model_validator

from outbound_pipeline.config.fields import FieldErrors, StrictModel
from outbound_pipeline.config.models import Campaign, Template
from outbound_pipeline.config.validation import cross_reference_problems, find_template
from outbound_pipeline.iadvize import ConversationQuerySettings


class IAdvizeSection(StrictModel):
    """What the file says of the iAdvize API: the names of its conversation search query, which
    the preflight confirms by introspection (docs/conversations.md)."""

    conversations: ConversationQuerySettings = Field(default_factory=ConversationQuerySettings)


class OutboundConfig(StrictModel):
    """The whole file: templates and campaigns, plus the names of the brand's tables."""

    customers_table: str = Field(default="customers", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    consents_table: str = Field(default="whatsapp_consents", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    iadvize: IAdvizeSection = Field(default_factory=IAdvizeSection)
    templates: list[Template]
    campaigns: list[Campaign]

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
