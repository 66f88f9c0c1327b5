"""The campaign configuration a data team writes: typed models for `templates:` and `campaigns:`.

Loaded once when the definitions load; every mistake fails loading with a message that names the file,
the campaign or template, the field and what is expected.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
import yaml
from babel import Locale, UnknownLocaleError
from babel.numbers import is_currency
from dagster._utils.schedules import is_valid_cron_string
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from outbound_pipeline.whatsapp import (
    parameter_violation,
    placeholders,
    unnumbered_placeholders,
)

BUNDLED_CONFIG = Path(__file__).parent.parent / "demo" / "campaigns.yaml"

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


class ConfigError(ValueError):
    """The configuration file is wrong; the message says where and what is expected."""


class _FieldErrors(ValueError):
    """Raised inside model validators to name the field(s) at fault, relative to the model.

    pydantic locates a model validator's error at the model itself (or at the top for the whole
    file); `parse_config` appends these paths so the message still names the field.
    """

    def __init__(self, *items: tuple[str, str]) -> None:
        super().__init__("; ".join(f"{where}: {message}" for where, message in items))
        self.items = items


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_strip)]


class Template(_Model):
    """An approved WhatsApp template, mirrored from WhatsApp Manager."""

    name: Text = Field(pattern=r"^[a-z0-9_]+$", description="Template name as approved by WhatsApp.")
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
                f"only numbered placeholders {{{{1}}}}..{{{{n}}}} are supported, found {', '.join(named)}"
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


class VariableSource(_Model):
    """Where one template parameter comes from: an audience column or a literal."""

    column: Text | None = None
    literal: str | None = None
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
        if (self.column is None) == (self.literal is None):
            raise ValueError("give exactly one of 'column' or 'literal'")
        if self.format == "currency" and not self.currency:
            raise _FieldErrors(("currency", "format 'currency' needs 'currency' (ISO code such as EUR)"))
        if self.currency and not is_currency(self.currency):
            raise _FieldErrors(("currency", f"'{self.currency}' is not an ISO 4217 currency code"))
        return self


def _source(value: Any) -> Any:
    # A bare string is the common case: the name of an audience column.
    return {"column": value} if isinstance(value, str) else value


Source = Annotated[VariableSource, BeforeValidator(_source)]


class Variables(_Model):
    """Template placeholder number -> source, per component."""

    header: dict[int, Source] = Field(default_factory=dict)
    body: dict[int, Source] = Field(default_factory=dict)

    def columns(self) -> list[str]:
        cols = [s.column for s in [*self.header.values(), *self.body.values()] if s.column]
        return list(dict.fromkeys(cols))


class ScheduleConfig(_Model):
    cron: str = "0 9 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not is_valid_cron_string(value):
            raise ValueError(f"'{value}' is not a valid cron expression (e.g. '0 9 * * *')")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return _timezone(value)


def _timezone(value: str) -> str:
    # 'localtime' names whatever the host is set to: a schedule must not change with the machine.
    if value in ("localtime", "Factory") or value not in zoneinfo.available_timezones():
        raise ValueError(f"'{value}' is not a known IANA timezone (e.g. Europe/Paris, UTC)")
    return value


class MessagingLimit(_Model):
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
            raise _FieldErrors(("portfolio", "scope 'portfolio' needs 'portfolio: <name>'"))
        return self

    @property
    def max_recipients(self) -> int | None:
        return LIMIT_TIERS[self.tier]


class FrequencyCap(_Model):
    max_messages: int = Field(ge=1)
    window_hours: float = Field(gt=0)


class QuietHours(_Model):
    """Hours of the day (local time) when sending is allowed: start <= hour < end."""

    start_hour: int = Field(default=9, ge=0, le=23)
    end_hour: int = Field(default=20, ge=1, le=24)
    timezone: str | None = Field(
        default=None, description="Fixed timezone; default: the recipient's country timezone."
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else _timezone(value)


def _region(value: str) -> str:
    if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"'{value}' is not a phone region; expected an ISO country code such as FR")
    return value.upper()


class Campaign(_Model):
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
    attribution_window_hours: float = Field(default=72, gt=0)
    start_date: dt.date
    end_date: dt.date | None = None
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    messaging_limit: MessagingLimit = Field(default_factory=MessagingLimit)
    max_send_rate: float = Field(default=80, gt=0, le=1000, description="Messages/s for the sender.")
    min_interval_seconds: float = Field(
        default=6, ge=0, description="Pair rate: least time between two messages to one recipient."
    )
    marketing_frequency_cap: FrequencyCap | None = None
    parameter_policy: Literal["skip", "clean"] = Field(
        default="skip", description="What to do with a parameter that breaks WhatsApp's rules."
    )
    quiet_hours: QuietHours | None = None
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
        return _region(value)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        from outbound_pipeline.whatsapp import normalise

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
        from outbound_pipeline.whatsapp import normalise

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
            raise _FieldErrors(
                ("end_date", f"{self.end_date} is before start_date {self.start_date}")
            )
        return self

    @property
    def limit_scope(self) -> str:
        """The key the messaging limit is counted under, shared across campaigns."""
        if self.messaging_limit.scope == "portfolio":
            return f"portfolio:{self.messaging_limit.portfolio}"
        return f"sender:{self.sender}"


class OutboundConfig(_Model):
    """The whole file: templates and campaigns, plus the names of the brand's tables."""

    customers_table: str = Field(default="customers", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    consents_table: str = Field(default="whatsapp_consents", pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    templates: list[Template]
    campaigns: list[Campaign]

    @model_validator(mode="after")
    def _cross_references(self) -> OutboundConfig:
        problems: list[tuple[str, str]] = []
        seen_templates: set[tuple[str, str]] = set()
        for template in self.templates:
            ident = (template.name, template.language)
            if ident in seen_templates:
                problems.append(
                    (f"templates[{template.name}/{template.language}]", "is declared twice")
                )
            seen_templates.add(ident)
        keys = [c.key for c in self.campaigns]
        for key in sorted({k for k in keys if keys.count(k) > 1}):
            problems.append((f"campaigns[{key}].key", "campaign keys must be unique; this one is repeated"))
        for campaign in self.campaigns:
            problems.extend(_check_campaign_template(campaign, self))
        problems.extend(_check_shared_limits(self.campaigns))
        if problems:
            raise _FieldErrors(*problems)
        return self

    def template_for(self, campaign: Campaign) -> Template:
        for template in self.templates:
            if (template.name, template.language) == (campaign.template, campaign.language):
                return template
        raise KeyError((campaign.template, campaign.language))

    def campaign(self, key: str) -> Campaign:
        for campaign in self.campaigns:
            if campaign.key == key:
                return campaign
        raise KeyError(key)


def _check_shared_limits(campaigns: list[Campaign]) -> list[tuple[str, str]]:
    """Campaigns counted under one messaging limit must agree on its tier.

    The tier belongs to the sender or portfolio, not to a campaign. With two tiers the pipeline
    would hold each campaign to its own, and an unlimited one would claim without the scope's lock:
    a limited campaign sharing the scope could then overshoot the real limit.
    """
    first_of_scope: dict[str, Campaign] = {}
    problems: list[tuple[str, str]] = []
    for campaign in campaigns:
        first = first_of_scope.setdefault(campaign.limit_scope, campaign)
        if campaign.messaging_limit.tier != first.messaging_limit.tier:
            shared = (
                f"portfolio '{campaign.messaging_limit.portfolio}'"
                if campaign.messaging_limit.scope == "portfolio"
                else "the same sender (scope: sender)"
            )
            problems.append((
                f"campaigns[{campaign.key}].messaging_limit.tier",
                f"'{campaign.messaging_limit.tier}' differs from campaigns[{first.key}]'s "
                f"'{first.messaging_limit.tier}', though both count under {shared}; campaigns that "
                "share a messaging limit must declare the same tier (the one WhatsApp Manager shows)",
            ))
    return problems


def _braces(numbers: list[int]) -> str:
    return ", ".join(f"{{{{{n}}}}}" for n in numbers)


def _check_campaign_template(campaign: Campaign, config: OutboundConfig) -> list[tuple[str, str]]:
    """What is wrong between a campaign and its template, as (field path, message) pairs."""
    where = f"campaigns[{campaign.key}]"
    try:
        template = config.template_for(campaign)
    except KeyError:
        known = ", ".join(f"{t.name}/{t.language}" for t in config.templates) or "none"
        languages = [t.language for t in config.templates if t.name == campaign.template]
        if languages:
            # The name exists: the language is what is wrong.
            return [(
                f"{where}.language",
                f"template '{campaign.template}' has no language '{campaign.language}' "
                f"under templates: (it has: {', '.join(languages)})",
            )]
        return [(
            f"{where}.template",
            f"no template '{campaign.template}' in language '{campaign.language}' under "
            f"templates: (known: {known})",
        )]
    problems: list[tuple[str, str]] = []
    body_only = template.header is None
    for component, count, mapping in (
        ("header", template.header_count, campaign.variables.header),
        ("body", template.body_count, campaign.variables.body),
    ):
        expected = set(range(1, count + 1))
        given = set(mapping)
        if given != expected:
            parts = []
            if expected - given:
                parts.append(f"missing {_braces(sorted(expected - given))}")
            if given - expected:
                parts.append(f"not in the template: {_braces(sorted(given - expected))}")
            problems.append((
                f"{where}.variables.{component}",
                f"template {template.name}/{template.language} has {count} {component} "
                f"placeholder(s); {'; '.join(parts)}",
            ))
        for number, source in sorted(mapping.items()):
            problem = _check_source(source, component, body_only, template.language)
            if problem:
                problems.append((f"{where}.variables.{component}.{number}", problem))
    return problems


def _check_source(source: VariableSource, component: str, body_only: bool, language: str) -> str | None:
    """A literal must render into a sendable parameter, and a format needs a locale babel knows."""
    if source.format is not None:
        try:
            Locale.parse(language)
        except (UnknownLocaleError, ValueError):
            return f"format '{source.format}' needs a language babel knows; '{language}' is not one"
    if source.literal is None:
        return None
    from outbound_pipeline.messages import format_value  # rendering imports this module

    try:
        value = format_value(source.literal, source, language)
    except (ValueError, ArithmeticError, TypeError):
        return f"literal {source.literal!r} is not a {source.format}"
    rule = parameter_violation(value, component, body_only)
    if rule is not None:
        return f"literal {value!r} breaks WhatsApp's parameter rules: {rule}"
    return None


def _describe_location(loc: tuple[Any, ...], raw: Any) -> str:
    """('campaigns', 0, 'schedule', 'cron') -> 'campaigns[order_ready].schedule.cron'."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int) and isinstance(node, list):
            entry = node[item] if 0 <= item < len(node) else None
            label: str | None = None
            if isinstance(entry, dict):
                key, name = entry.get("key"), entry.get("name")
                if isinstance(key, str) and key:
                    label = key
                elif isinstance(name, str) and name:
                    label = f"{name}/{entry.get('language')}"
            text = f"[{label or item}]"
            if parts:
                parts[-1] += text
            else:
                parts.append(text)
            node = entry
        else:
            # pydantic names union members and wrapper steps in loc: 'function-after[...]', 'str'...
            is_key = isinstance(node, dict) and item in node
            if isinstance(item, str) and not is_key and (
                "[" in item or item.startswith("function-") or item in _TYPE_STEPS
            ):
                continue
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


# Union and wrapper members pydantic may add to an error's location.
_TYPE_STEPS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "VariableSource", "Template", "Campaign"})


def _join(base: str, relative: str) -> str:
    if base == "(top level)":
        return relative
    return f"{base}{relative}" if relative.startswith("[") else f"{base}.{relative}"


def parse_config(raw: Any, source: str = "<config>") -> OutboundConfig:
    """Validate a parsed YAML document; raise ConfigError naming file, entry and field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'templates:' and 'campaigns:'")
    try:
        return OutboundConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = _describe_location(tuple(error["loc"]), raw)
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, _FieldErrors):
                lines.extend(f"  {_join(where, path)}: {message}" for path, message in cause.items)
                continue
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing":
                message = "is required"
            elif error["type"] == "extra_forbidden":
                message = "is not a known field (check its spelling)"
            elif "input" in error and error["type"] != "value_error":
                message = f"{message} (got {error['input']!r})"
                if error["type"] == "string_type" and isinstance(error["input"], int) and abs(error["input"]) >= 10**6:
                    # YAML reads an unquoted +33644646081 as a number.
                    message += "; quote it in the YAML file"
            lines.append(f"  {where}: {message}")
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines)) from None


def load_config(path: str | Path | None = None) -> OutboundConfig:
    """Read and validate the YAML file (default: the bundled demo)."""
    path = Path(path) if path else BUNDLED_CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, str(path))


def campaign_key_is_valid(key: str) -> bool:
    return re.match(CAMPAIGN_KEY_PATTERN, key) is not None
