"""The checklist's items and the checks that need neither the warehouse's data nor the API."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.config import Campaign, OutboundConfig
from outbound_pipeline.warehouse import reading
from outbound_pipeline.whatsapp import placeholders


class ItemStatus(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"  # the campaign can launch, but read the detail
    FAIL = "fail"  # the job fails: not ready to launch
    SKIPPED = "skipped"
    MANUAL = "manual"  # a step only a person can confirm


PASS, WARN, FAIL = ItemStatus.PASS, ItemStatus.WARN, ItemStatus.FAIL
SKIPPED, MANUAL = ItemStatus.SKIPPED, ItemStatus.MANUAL
MANUAL_STEPS = (
    "The outbound campaign is active in iAdvize and its UUID is the campaign_id configured here.",
    "A reply from a test phone reaches an operator or the bot.",
    "That conversation is attached to the campaign in iAdvize's statistics.",
)


@dataclass
class Item:
    name: str
    status: ItemStatus
    detail: str

    def row(self) -> dict[str, str]:
        return {"item": self.name, "status": str(self.status), "detail": self.detail}


def check_template(campaign: Campaign, config: OutboundConfig) -> Item:
    try:
        template = config.template_for(campaign)
    except KeyError:
        return Item(
            "template",
            FAIL,
            f"no template {campaign.template}/{campaign.language} in the configuration",
        )
    header_n, body_n = len(placeholders(template.header or "")), len(placeholders(template.body))
    mapped_h, mapped_b = len(campaign.variables.header), len(campaign.variables.body)
    if (header_n, body_n) != (mapped_h, mapped_b) or template.language != campaign.language:
        return Item(
            "template",
            FAIL,
            f"{template.name}/{template.language} has {header_n} header and {body_n} body placeholders; "
            f"the campaign maps {mapped_h} and {mapped_b} (language {campaign.language})",
        )
    return Item(
        "template",
        PASS,
        f"{template.name}/{template.language} ({template.category}): {header_n} header and {body_n} body "
        "placeholders, all mapped; the test send confirms WhatsApp knows it",
    )


def check_dates(campaign: Campaign, day: dt.date) -> Item:
    span = f"{campaign.start_date}..{campaign.end_date or 'open'}"
    if campaign.end_date is not None and day > campaign.end_date:
        return Item(
            "dates",
            FAIL,
            f"{day} is after end_date {campaign.end_date} ({span}): the campaign has ended",
        )
    if day < campaign.start_date:
        return Item(
            "dates",
            WARN,
            f"{day} is before start_date {campaign.start_date} ({span}): nothing is sent until then",
        )
    return Item(
        "dates",
        PASS,
        f"{day} is within {span}; schedule '{campaign.schedule.cron}' {campaign.schedule.timezone}",
    )


def active_halt(engine: sa.Engine, campaign: Campaign, now: dt.datetime) -> str | None:
    """The send halt that would stop the campaign now, if any."""
    with reading(engine) as conn:
        return ledger.active_halt(conn, campaign.key, now)


def check_halts(halted: str | None) -> Item:
    return (
        Item("halts", FAIL, f"sends are halted: {halted}")
        if halted
        else Item("halts", PASS, "no halt")
    )


def checklist_markdown(rows: list[dict[str, str]]) -> str:
    lines = ["| item | status | detail |", "|---|---|---|"]
    for row in rows:
        detail = row["detail"].replace("|", "\\|").replace("\n", " / ")
        lines.append(f"| {row['item']} | {row['status']} | {detail} |")
    return "\n".join(lines)
