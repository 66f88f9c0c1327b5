"""The launch checklist of a campaign, as an operator job: `<campaign>_preflight`.

Run it from the Launchpad before switching a campaign's schedule on (and after any change to its
template, credentials or query). It checks, in order:

1. credentials: a token can be had and `/_authenticated` accepts it;
2. dates: the day checked lies within the campaign's start_date..end_date;
3. template: the configured template and language exist, with as many placeholders as variables;
4. halts: no send halt would stop the campaign;
5. preview: the audience query runs for the day and the first eligible row renders (read only:
   nothing is written to the audience, messages or ledger tables);
6. test send: the real template goes to the campaign's `test_recipients`, and only to them, with the
   preview row's values (or sample values). Each answer is recorded in `outbound_test_sends`, apart
   from the ledger: a test message never counts against limits, never marks anyone as contacted and
   never blocks or replaces a production send;
7. manual: the steps only a person can confirm (campaign active in iAdvize, replies reach
   operators, conversations attached to the campaign).

The job fails when any automatic item fails; its output metadata is the checklist.
"""


import asyncio
import datetime as dt
import time
import zoneinfo
from dataclasses import dataclass
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from outbound_pipeline import ledger
from outbound_pipeline.audience import (
    CONSENT_STATUS,
    audience_sql,
    json_value,
    required_columns,
    verdict,
)
from outbound_pipeline.clock import ClockResource
from outbound_pipeline.config import Campaign, OutboundConfig, Template
from outbound_pipeline.iadvize import (
    Action,
    IAdvizeClient,
    IAdvizeError,
    IAdvizeResource,
    OutboundMessage,
)
from outbound_pipeline.messages import RenderSkip, render_row
from outbound_pipeline.warehouse import (
    WarehouseResource,
    database_message,
    rows_kept_out_of_errors,
    test_sends,
)
from outbound_pipeline.whatsapp import mask, placeholders

PASS, WARN, FAIL, SKIPPED, MANUAL = "pass", "warn", "fail", "skipped", "manual"
# Rows of the audience query read at most to find one that is eligible and renders.
MAX_PREVIEW_SCAN = 10_000
MANUAL_STEPS = (
    "The outbound campaign is active in iAdvize and its UUID is the campaign_id configured here.",
    "A reply from a test phone reaches an operator or the bot.",
    "That conversation is attached to the campaign in iAdvize's statistics.",
)


def job_name(campaign: Campaign) -> str:
    return f"{campaign.key}_preflight"


class PreflightConfig(dg.Config):
    """Launchpad: ops.<campaign>__preflight.config."""

    partition_date: str | None = Field(
        default=None, description="Day to check (YYYY-MM-DD); default: today in the schedule's timezone."
    )
    send_test: bool = Field(default=True, description="Send the template to the campaign's test_recipients.")
    sample_values: bool = Field(
        default=False,
        description="Fill the test message with sample values instead of the first eligible row's.",
    )


@dataclass
class Item:
    name: str
    status: str
    detail: str

    def row(self) -> dict[str, str]:
        return {"item": self.name, "status": self.status, "detail": self.detail}


@dataclass
class Preview:
    header: list[str]
    body: list[str]
    text: str
    customer_id: str | None
    recipient: str | None
    rows_read: int


def sample_parameters(campaign: Campaign, template: Template) -> tuple[list[str], list[str]]:
    """Values that respect WhatsApp's rules: literals as configured, 'test <n>' for columns."""

    def values(mapping: dict[int, Any], component: str) -> list[str]:
        return [
            mapping[n].literal if mapping[n].literal is not None else f"test {component} {n}"
            for n in sorted(mapping)
        ]

    return values(campaign.variables.header, "header"), values(campaign.variables.body, "body")


def first_eligible_preview(
    conn: sa.Connection, campaign: Campaign, config: OutboundConfig, day: str
) -> tuple[Preview | None, int]:
    """The first row of the day's audience that is eligible and renders; (None, rows read) if none.

    Read only: the query runs as the audience asset runs it (with the current consent), nothing
    is written. Raises ValueError naming the missing columns.
    """
    template = config.template_for(campaign)
    params = {"outbound_consent_category": campaign.consent_category}
    if ":partition_date" in campaign.audience_sql:
        params["partition_date"] = day
    result = conn.execute(sa.text(audience_sql(campaign, config, conn.dialect)), params)
    try:
        returned = list(result.keys())
        missing = [c for c in required_columns(campaign) if c not in returned]
        if missing:
            raise ValueError(f"the audience query does not return {', '.join(missing)}")
        read = 0
        for record in result.mappings():
            read += 1
            if read > MAX_PREVIEW_SCAN:
                break
            recipient, _, reason = verdict(campaign, template, record)
            if reason is not None or record.get(CONSENT_STATUS) != "opted_in":
                continue
            try:
                fields = {c: json_value(record.get(c)) for c in campaign.variables.columns()}
                header, body, text, _ = render_row(campaign, template, fields)
            except RenderSkip:
                continue
            except (IndexError, KeyError):
                raise ValueError(
                    "the template's placeholders and the campaign's variables do not match"
                ) from None
            customer = record.get(campaign.customer_id_column)
            return Preview(header, body, text, None if customer is None else str(customer), recipient, read), read
        return None, read
    finally:
        result.close()


def _check_template(campaign: Campaign, config: OutboundConfig) -> Item:
    try:
        template = config.template_for(campaign)
    except KeyError:
        return Item("template", FAIL, f"no template {campaign.template}/{campaign.language} in the configuration")
    header_n, body_n = len(placeholders(template.header or "")), len(placeholders(template.body))
    mapped_h, mapped_b = len(campaign.variables.header), len(campaign.variables.body)
    if (header_n, body_n) != (mapped_h, mapped_b) or template.language != campaign.language:
        return Item(
            "template", FAIL,
            f"{template.name}/{template.language} has {header_n} header and {body_n} body placeholders; "
            f"the campaign maps {mapped_h} and {mapped_b} (language {campaign.language})",
        )
    return Item(
        "template", PASS,
        f"{template.name}/{template.language} ({template.category}): {header_n} header and {body_n} body "
        "placeholders, all mapped; the test send confirms WhatsApp knows it",
    )


def _check_dates(campaign: Campaign, day: dt.date) -> Item:
    span = f"{campaign.start_date}..{campaign.end_date or 'open'}"
    if campaign.end_date is not None and day > campaign.end_date:
        return Item("dates", FAIL, f"{day} is after end_date {campaign.end_date} ({span}): the campaign has ended")
    if day < campaign.start_date:
        return Item("dates", WARN, f"{day} is before start_date {campaign.start_date} ({span}): nothing is sent until then")
    return Item("dates", PASS, f"{day} is within {span}; schedule '{campaign.schedule.cron}' {campaign.schedule.timezone}")


async def _credentials(client: IAdvizeClient, resource: IAdvizeResource) -> Item:
    try:
        valid = await client.token_is_valid()
    except IAdvizeError as exc:
        return Item("credentials", FAIL, str(exc))
    except Exception as exc:  # transport errors name no secret; their text may name the URL
        return Item("credentials", FAIL, f"the API could not be reached ({type(exc).__name__})")
    if not valid:
        return Item("credentials", FAIL, "a token was issued but /_authenticated refused it")
    return Item("credentials", PASS, f"token valid ({resource.describe()})")


async def _test_sends(
    engine: sa.Engine, client: IAdvizeClient, campaign: Campaign, template: Template, header: list[str], body: list[str]
) -> list[dict[str, Any]]:
    out = []
    for recipient in dict.fromkeys(campaign.test_recipients):
        # A test message takes one of the sender's send slots like any other: a campaign of the
        # same number may be sending at its full rate right now.
        with engine.begin() as conn:
            slot = ledger.reserve_send_slots(conn, campaign.sender, 1, campaign.max_send_rate, time.time())
        await asyncio.sleep(max(0.0, slot - time.time()))
        message = OutboundMessage(
            sender=campaign.sender, recipient=recipient, template_name=template.name,
            language=template.language, header_params=header, body_params=body,
            campaign_id=campaign.campaign_id,
        )
        try:
            result = await client.send(message)
            verdict_ = result.verdict
        except IAdvizeError as exc:
            out.append({"recipient": recipient, "status": "failed", "reason": f"login_refused: {exc}"[:300], "error_code": "login"})
            continue
        if verdict_.action is Action.SENT:
            status, reason = "sent", "accepted"
        elif verdict_.action is Action.UNKNOWN:
            status, reason = "unknown", verdict_.reason
        else:
            status, reason = "failed", verdict_.reason
        out.append(
            {
                "recipient": recipient, "status": status, "reason": reason[:300], "error_code": verdict_.code,
                "message_id": result.message_id, "message_text": result.message_text,
            }
        )
    return out


def run_checklist(
    campaign: Campaign,
    config: OutboundConfig,
    cfg: PreflightConfig,
    warehouse: WarehouseResource,
    iadvize: IAdvizeResource,
    now: dt.datetime,
    run_id: str,
) -> tuple[list[Item], Preview | None]:
    """Every item of the checklist; records the test sends. Never writes the ledger."""
    template = config.template_for(campaign)
    day = (
        dt.date.fromisoformat(cfg.partition_date)
        if cfg.partition_date
        else now.astimezone(zoneinfo.ZoneInfo(campaign.schedule.timezone)).date()
    )
    items: list[Item] = []
    engine = warehouse.engine

    async def api_part(preview: Preview | None, halted: str | None) -> tuple[Item, Item]:
        try:
            iadvize.validate_settings()
        except IAdvizeError as exc:
            return Item("credentials", FAIL, str(exc)), Item("test_send", SKIPPED, "no credentials")
        async with iadvize.client(max_connections=4) as client:
            credentials = await _credentials(client, iadvize)
            if not cfg.send_test:
                return credentials, Item("test_send", SKIPPED, "send_test is off")
            if not campaign.test_recipients:
                return credentials, Item("test_send", FAIL, "no test_recipients configured for the campaign")
            if credentials.status != PASS:
                return credentials, Item("test_send", SKIPPED, "credentials failed")
            if halted:
                return credentials, Item("test_send", SKIPPED, f"sends are halted: {halted}")
            if preview is not None and not cfg.sample_values:
                header, body, source = preview.header, preview.body, "first_eligible_row"
            else:
                header, body = sample_parameters(campaign, template)
                source = "sample_values"
            sent_at = now
            results = await _test_sends(engine, client, campaign, template, header, body)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(test_sends),
                [
                    {
                        "run_id": run_id, "campaign_key": campaign.key, "campaign_id": campaign.campaign_id,
                        "sender": campaign.sender, "template_name": template.name, "language": template.language,
                        "parameters_from": source, "sent_at": sent_at, "message_id": None, "message_text": None,
                        **r,
                    }
                    for r in results
                ],
            )
        ok = [r for r in results if r["status"] == "sent"]
        summary = "; ".join(f"{mask(r['recipient'])}: {r['status']} ({r['reason']})" for r in results)
        status = PASS if len(ok) == len(results) else FAIL
        return credentials, Item("test_send", status, f"{len(ok)}/{len(results)} accepted, values from {source}: {summary}")

    items.append(_check_dates(campaign, day))
    items.append(_check_template(campaign, config))
    with engine.connect() as conn:
        halted = ledger.active_halt(conn, campaign.key, now)
    items.append(Item("halts", FAIL, f"sends are halted: {halted}") if halted else Item("halts", PASS, "no halt"))
    preview: Preview | None = None
    try:
        with warehouse.reading() as conn:
            preview, read = first_eligible_preview(conn, campaign, config, day.isoformat())
    except sa.exc.SQLAlchemyError as exc:
        items.append(Item("preview", FAIL, f"the audience query failed for {day}: {database_message(exc)}"))
    except ValueError as exc:
        items.append(Item("preview", FAIL, f"no preview for {day}: {exc}"))
    else:
        if preview is None:
            items.append(Item("preview", WARN, f"no eligible row that renders among {read} rows of {day}; the test send uses sample values"))
        else:
            items.append(
                Item(
                    "preview", PASS,
                    f"row {preview.rows_read} of {day} (customer {preview.customer_id}, {mask(preview.recipient)}): "
                    f"{preview.text}",
                )
            )
    credentials, test_send = asyncio.run(api_part(preview, halted))
    items.insert(0, credentials)
    items.append(test_send)
    items.extend(Item("manual", MANUAL, step) for step in MANUAL_STEPS)
    return items, preview


def build_preflight_job(campaign: Campaign, outbound: OutboundConfig) -> dg.JobDefinition:
    template = outbound.template_for(campaign)

    @dg.op(
        name=f"{campaign.key}__preflight",
        description=(
            f"Launch checklist of {campaign.key}: credentials, dates, template "
            f"{template.name}/{template.language}, halts, a preview from the first eligible row, and "
            f"a test send to its {len(campaign.test_recipients)} test recipient(s) only."
        ),
        tags={"kind": "preflight"},
    )
    @rows_kept_out_of_errors
    def preflight_op(
        context: dg.OpExecutionContext,
        config: PreflightConfig,
        warehouse: WarehouseResource,
        iadvize: IAdvizeResource,
        clock: ClockResource,
    ) -> dg.Output[list[dict[str, str]]]:
        items, preview = run_checklist(campaign, outbound, config, warehouse, iadvize, clock.now(), context.run_id)
        rows = [item.row() for item in items]
        for item in items:
            log = context.log.error if item.status == FAIL else context.log.info
            log(f"{campaign.key} preflight {item.name}: {item.status}: {item.detail}")
        metadata = {
            "checklist": dg.MetadataValue.md(_checklist_md(rows)),
            "items": dg.MetadataValue.json(rows),
            "passed": all(item.status != FAIL for item in items),
            "preview_text": dg.MetadataValue.text(preview.text if preview else ""),
            "iadvize": iadvize.describe(),
        }
        failed = [item.name for item in items if item.status == FAIL]
        if failed:
            raise dg.Failure(
                description=f"{campaign.key} is not ready to launch: {', '.join(failed)} failed",
                metadata=metadata,
            )
        return dg.Output(rows, metadata=metadata)

    @dg.job(
        name=job_name(campaign),
        description=f"Launch checklist of {campaign.key}: run it before switching the schedule on.",
        tags={"outbound/campaign": campaign.key, "outbound/kind": "preflight"},
    )
    def preflight_job() -> None:
        preflight_op()

    return preflight_job


def _checklist_md(rows: list[dict[str, str]]) -> str:
    lines = ["| item | status | detail |", "|---|---|---|"]
    for row in rows:
        detail = row["detail"].replace("|", "\\|").replace("\n", " / ")
        lines.append(f"| {row['item']} | {row['status']} | {detail} |")
    return "\n".join(lines)

