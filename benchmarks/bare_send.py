"""The floor of the send benchmark: the same GraphQL mutations the pipeline will send, built from
`outbound_messages`, made by one aiohttp session and a fixed pool of workers with nothing else (no
database, no checks, no pacing)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import sqlalchemy as sa

from benchmarks._common import CAMPAIGN_KEY, SENDER
from outbound_pipeline.iadvize import MUTATION_FIELD
from outbound_pipeline.warehouse import messages
from outbound_pipeline.whatsapp import variables_payload, wire_format

# The document the pipeline's client builds from introspection (the sandbox's input type).
DOCUMENT = (
    "mutation SendWhatsAppTemplate($input: WhatsAppOutboundMessageSendInput!) { "
    f"{MUTATION_FIELD}(whatsAppOutboundMessageSendInput: $input) {{ messageText messageId }} }}"
)


def payloads(engine: sa.Engine, campaign_id: str, day: str) -> list[dict[str, Any]]:
    """The N mutations the pipeline will send, built from outbound_messages."""
    m = messages.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                m.recipient, m.template_name, m.language, m.header_params_json, m.body_params_json
            ).where(
                m.campaign_key == CAMPAIGN_KEY, m.partition_date == day, m.rendered == sa.true()
            )
        ).all()
    return [
        {
            "query": DOCUMENT,
            "operationName": "SendWhatsAppTemplate",
            "variables": {
                "input": {
                    "senderId": wire_format(SENDER),
                    "recipientId": wire_format(r.recipient),
                    "templateName": r.template_name,
                    "language": r.language,
                    "headerVariables": variables_payload(json.loads(r.header_params_json or "[]")),
                    "bodyVariables": variables_payload(json.loads(r.body_params_json or "[]")),
                    "campaignId": campaign_id,
                }
            },
        }
        for r in rows
    ]


async def bare_loop(
    base_url: str, bodies: list[dict[str, Any]], concurrency: int
) -> dict[str, Any]:
    """The minimum that makes the same calls: aiohttp, a fixed pool of workers, nothing else."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            f"{base_url}/oauth2/token",
            data={"username": "bench", "password": "bench", "grant_type": "password"},
        ) as response:
            token = (await response.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        accepted = 0
        position = 0

        async def worker() -> None:
            nonlocal accepted, position
            while position < len(bodies):
                body = bodies[position]
                position += 1
                async with session.post(
                    f"{base_url}/graphql", json=body, headers=headers
                ) as response:
                    data = await response.json()
                if ((data.get("data") or {}).get(MUTATION_FIELD) or {}).get("messageId"):
                    accepted += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {
        "calls": len(bodies),
        "accepted": accepted,
        "seconds": round(seconds, 3),
        "msg_per_s": round(len(bodies) / seconds, 1),
    }
