"""The entries a data team writes in the configuration file: templates and campaigns, typed.

Each model checks its own fields; what needs two entries at once (a campaign against its template,
campaigns sharing a limit) is in `validation`, the whole file in `outbound_config`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from babel.numbers import is_currency
from pydantic import BeforeValidator, Field, field_validator, model_validator

from outbound_pipeline.config.fields import (
    FieldErrors,
    StrictModel,
    Text,
    checked_region,
    checked_timezone,
)
from outbound_pipeline.config.schedules import FollowUp, ScheduleConfig
from outbound_pipeline.whatsapp import normalise, placeholders, unnumbered_placeholders

CAMPAIGN_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"

# Meta's messaging-limit tiers: unique recipients a scope may start conversations with per rolling 24 h.
LIMIT_TIERS: dict[str, int | None] = {
    "250": 250,
    "1K": 1_000,
    "2K": 2_000,
    "10K": 10_000,
    "100K": 100_000,
    "unlimited": None,
}


class Template(StrictModel):
    """An approved WhatsApp template, mirrored from WhatsApp Manager."""

    name: Text = Field(
        pattern=r"^[a-z0-9_]+$", description="Template name as approved by WhatsApp."
    )
    language: Text = Field(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$", description="e.g. fr, en_US.")
    category: Literal["MARKETING", "UTILITY", "AUTHENTICATION"]
    header: str | None = Field(default=None, description="Header text, may hold {{1}}.")
    body: str = Field(min_length=1, description="Body text with {{1}}..{{n}} placeholders.")

    @field_validator("header", mode="before")
    @classmethod
    def _no_blank_header(cls, text: Any) -> Any:
        # An empty header is no header: the body is then the only component (32,768 limit).
        return None if isinstance(text, str) and not text.strip() else text

    @field_validator("header", "body")
    @classmethod
    def _numbered_placeholders(cls, text: str | None) -> str | None:
        if text is None:
            return text
        named = unnumbered_placeholders(text)
        if named:
            raise ValueError(
                "only numbered placeholders {{1}}..{{n}} are supported, "
                f"found {', '.join(named)}"
            )
        found = placeholders(text)
        if found and found != list(range(1, max(found) + 1)):
            raise ValueError(
                f"placeholders must be numbered {{{{1}}}}..{{{{n}}}} without gaps, found {found}"
            )
        return text

    @field_validator("header")
    @classmethod
    def _one_header_placeholder(cls, text: str | None) -> str | None:
        if text is not None and len(placeholders(text)) > 1:
            raise ValueError("a text header holds at most one placeholder, {{1}}")
        return text

    @property
    def header_count(self) -> int:
        return len(placeholders(self.header or ""))

    @property
    def body_count(self) -> int:
        return len(placeholders(self.body))


class VariableSource(StrictModel):
    """Where one template parameter comes from: an audience column, a literal, or the recipient's
    signed unsubscribe link (`unsubscribe: link`) or its token alone (`unsubscribe: token`, for a
    URL button whose approved URL holds the rest)."""

    column: Text | None = None
    literal: str | None = None
    unsubscribe: Literal["link", "token"] | None = Field(
        default=None, description="The recipient's signed unsubscribe link, or its token alone."
    )
    format: Literal["date", "number", "currency"] | None = Field(
        default=None, description="Format a date or number for the template's language."
    )
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")

    @field_validator("column")
    @classmethod
    def _column_named(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("an audience column name cannot be empty")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> VariableSource:
        given = [v for v in (self.column, self.literal, self.unsubscribe) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'column', 'literal' or 'unsubscribe'")
        if self.unsubscribe is not None and self.format is not None:
            raise FieldErrors(("format", "an unsubscribe link is sent as it is: remove 'format'"))
        if self.format == "currency" and not self.currency:
            raise FieldErrors(
                ("currency", "format 'currency' needs 'currency' (ISO code such as EUR)")
            )
        if self.currency and not is_currency(self.currency):
            raise FieldErrors(("currency", f"'{self.currency}' is not an ISO 4217 currency code"))
        return self


def _source(value: Any) -> Any:
    # A bare string is the common case: the name of an audience column.
    return {"column": value} if isinstance(value, str) else value


Source = Annotated[VariableSource, BeforeValidator(_source)]


class Variables(StrictModel):
    """Template placeholder number -> source, per component."""

    header: dict[int, Source] = Field(default_factory=dict)
    body: dict[int, Source] = Field(default_factory=dict)

    def columns(self) -> list[str]:
        cols = [s.column for s in [*self.header.values(), *self.body.values()] if s.column]
        return list(dict.fromkeys(cols))

    def uses_unsubscribe(self) -> bool:
        return any(s.unsubscribe for s in [*self.header.values(), *self.body.values()])


class MessagingLimit(StrictModel):
    """WhatsApp's messaging limit: unique recipients per rolling 24 h, per sender or portfolio."""

    scope: Literal["sender", "portfolio"] = "sender"
    portfolio: str | None = Field(
        default=None, description="Portfolio name shared by the campaigns it covers."
    )
    tier: str = Field(default="1K", description="One of " + ", ".join(LIMIT_TIERS))

    @field_validator("tier", mode="before")
    @classmethod
    def _tier(cls, value: Any) -> str:
        value = str(value)
        if value not in LIMIT_TIERS:
            raise ValueError(f"'{value}' is not a tier; expected one of {', '.join(LIMIT_TIERS)}")
        return value

    @model_validator(mode="after")
    def _portfolio(self) -> MessagingLimit:
        if self.scope == "portfolio" and not self.portfolio:
            raise FieldErrors(("portfolio", "scope 'portfolio' needs 'portfolio: <name>'"))
        return self

    @property
    def max_recipients(self) -> int | None:
        return LIMIT_TIERS[self.tier]


class FrequencyCap(StrictModel):
    max_messages: int = Field(ge=1)
    window_hours: float = Field(gt=0)


class QuietHours(StrictModel):
    """Hours of the day (local time) when sending is allowed: start <= hour < end."""

    start_hour: int = Field(default=9, ge=0, le=23)
    end_hour: int = Field(default=20, ge=1, le=24)
    timezone: str | None = Field(
        default=None, description="Fixed timezone; default: the recipient's country timezone."
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else checked_timezone(value)


@dataclass(frozen=True)
class Arm:
    """One template a campaign sends and its variables: the campaign's own (variant None) or a
    variant's."""

    variant: str | None
    template: str
    language: str
    variables: Variables
    weight: float


class Variant(StrictModel):
    """One of several templates a campaign tries, given to a share of its customers (weight)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]{0,31}$", description="Short slug, e.g. a, b.")
    template: Text | None = Field(default=None, description="Default: the campaign's template.")
    language: Text | None = Field(default=None, description="Default: the campaign's language.")
    weight: float = Field(default=1, gt=0, description="Relative share of the contacted customers.")
    variables: Variables | None = Field(
        default=None, description="Default: the campaign's variables."
    )


class Campaign(StrictModel):
    """One daily outbound campaign: who, with which template, through which iAdvize campaign."""

    key: str = Field(pattern=CAMPAIGN_KEY_PATTERN, description="Slug: group name and key prefix.")
    description: str = ""
    campaign_id: str = Field(description="The iAdvize outbound campaign UUID.")
    sender: str = Field(description="The brand's WhatsApp number, E.164.")
    template: Text
    language: Text
    consent_category: Text = Field(min_length=1)
    audience_sql: str = Field(min_length=1, description="SQL; may use :partition_date.")
    variables: Variables = Field(default_factory=Variables)
    customer_id_column: Text = Field(default="customer_id", min_length=1)
    phone_column: Text = Field(default="phone", min_length=1)
    country_column: Text | None = Field(
        default="country",
        description="ISO country of the customer, used to read national numbers when the query "
        "returns it; phone_region otherwise.",
    )
    phone_region: str = "FR"
    attribution_window_hours: float = Field(
        default=72,
        gt=0,
        description="Replies and conversions within this many hours of a message count for it.",
    )
    start_date: dt.date
    end_date: dt.date | None = None
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    follow_up: FollowUp = Field(default_factory=FollowUp)
    messaging_limit: MessagingLimit = Field(default_factory=MessagingLimit)
    max_send_rate: float = Field(
        default=80, gt=0, le=1000, description="Messages/s for the sender."
    )
    min_interval_seconds: float = Field(
        default=6, ge=0, description="Pair rate: least time between two messages to one recipient."
    )
    marketing_frequency_cap: FrequencyCap | None = None
    parameter_policy: Literal["skip", "clean"] = Field(
        default="skip", description="What to do with a parameter that breaks WhatsApp's rules."
    )
    quiet_hours: QuietHours | None = None
    holdout_percent: float | None = Field(
        default=None,
        gt=0,
        lt=100,
        description="Share of customers kept out (recorded skipped, reason holdout), by a stable "
        "hash of (campaign, customer): the control group of the conversion figures.",
    )
    variants: list[Variant] = Field(
        default_factory=list,
        description="Templates tried against each other, assigned by the same stable hash.",
    )
    conversion_sql: str | None = Field(
        default=None,
        min_length=1,
        description="SQL on the warehouse returning the customer_id of customers who converted "
        "after the day; may use :partition_date and :window_end (the day + the attribution window).",
    )
    test_recipients: list[str] = Field(default_factory=list)
    owners: list[str] = Field(default_factory=list)

    @field_validator("campaign_id", mode="before")
    @classmethod
    def _uuid(cls, value: Any) -> str:
        try:
            # Canonical lowercase form: the ledger and the API compare it as text.
            return str(uuid.UUID(str(value).strip()))
        except (ValueError, AttributeError, TypeError):
            raise ValueError(
                f"'{value}' is not a UUID; copy the campaign ID from iAdvize "
                "(e.g. 5dd2be5a-6aeb-4ef2-8c8d-c78d51e21acf)"
            ) from None

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        return checked_region(value)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        result = normalise(str(value), None)
        if result.e164 is None:
            raise ValueError(
                f"sender '{value}' is not a valid international number ({result.reason}); "
                "write it in E.164, e.g. +33644646081"
            )
        return result.e164

    @field_validator("test_recipients")
    @classmethod
    def _test_recipients(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            result = normalise(str(value), None)
            if result.e164 is None:
                raise ValueError(f"test recipient '{value}' is not a valid E.164 number")
            out.append(result.e164)
        return out

    @model_validator(mode="after")
    def _dates(self) -> Campaign:
        if self.end_date is not None and self.end_date < self.start_date:
            raise FieldErrors(
                ("end_date", f"{self.end_date} is before start_date {self.start_date}")
            )
        return self

    def arms(self) -> list[Arm]:
        """What the campaign sends: its own template and variables, or one per variant."""
        if not self.variants:
            return [Arm(None, self.template, self.language, self.variables, 1.0)]
        return [
            Arm(
                v.name,
                v.template or self.template,
                v.language or self.language,
                v.variables or self.variables,
                v.weight,
            )
            for v in self.variants
        ]

    def arm(self, variant: str | None) -> Arm:
        """The arm a row's variant names (the campaign's own one for None)."""
        for arm in self.arms():
            if arm.variant == variant:
                return arm
        raise KeyError(variant)

    def variable_columns(self) -> list[str]:
        """Audience columns any arm's variables read."""
        return list(dict.fromkeys(c for arm in self.arms() for c in arm.variables.columns()))

    def uses_unsubscribe(self) -> bool:
        return any(arm.variables.uses_unsubscribe() for arm in self.arms())

    @property
    def limit_scope(self) -> str:
        """The key the messaging limit is counted under, shared across campaigns."""
        if self.messaging_limit.scope == "portfolio":
            return f"portfolio:{self.messaging_limit.portfolio}"
        return f"sender:{self.sender}"
