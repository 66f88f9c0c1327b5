"""`outbound-pipeline suppressions add|list|publish`: the pipeline's suppression list by hand; and
the demo's unsubscribe link (`outbound-pipeline demo [--serve-unsubscribe]`).

`add` records phones (source `cli`) in the state store, where they take effect at once for every
campaign, then publishes the list to the warehouse (`outbound_suppression_list`); `list` prints it,
phones masked unless `--full`; `publish` copies it to the warehouse again.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import urllib.parse

import sqlalchemy as sa

from outbound_pipeline.clock import utcnow
from outbound_pipeline.ledger import publish_suppressions
from outbound_pipeline.outcomes import Status
from outbound_pipeline.settings import state_from_env, warehouse_from_env
from outbound_pipeline.unsubscribe import (
    BASE_URL_ENV,
    SECRET_ENV,
    SuppressionSource,
    create_app,
    list_suppressions,
    serve,
    suppress,
    unsubscribe_link,
)
from outbound_pipeline.warehouse import WarehouseError, deliveries
from outbound_pipeline.whatsapp import mask, normalise


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "suppressions",
        help="add phones to the suppression list (no message from any campaign), list or publish it",
    )
    p.add_argument(
        "action",
        choices=["add", "list", "publish"],
        help="add phones, list the list, or publish it to the warehouse again",
    )
    p.add_argument(
        "phones",
        nargs="*",
        help="with add: phones in E.164 (+33612345678), or national with --region",
    )
    p.add_argument("--region", default=None, help="with add: country of national numbers, e.g. FR")
    p.add_argument("--full", action="store_true", help="with list: print the phones unmasked")


def run(args: argparse.Namespace) -> int:
    state = state_from_env().open()
    if args.action == "add":
        return _add(state, args.phones, args.region)
    if args.action == "publish":
        return _publish(state)
    with state.connect() as conn:
        entries = list_suppressions(conn)
    if not entries:
        print("the suppression list is empty")
        return 0
    for e in entries:
        phone = e.phone if args.full else mask(e.phone)
        print(f"{phone:<17} {e.source:<5} {e.suppressed_at.isoformat()}")
    print(f"{len(entries)} phone(s)")
    return 0


def _add(state: sa.Engine, phones: list[str], region: str | None) -> int:
    if not phones:
        print("name the phone(s) to add, e.g. +33612345678", file=sys.stderr)
        return 2
    numbers = []
    for raw in phones:
        result = normalise(raw, region.upper() if region else None)
        if result.e164 is None:
            print(
                f"{mask(raw)}: not a valid phone number ({result.reason}); write it in E.164 "
                "(+33612345678) or give --region for a national number",
                file=sys.stderr,
            )
            return 2
        numbers.append(result.e164)
    now = utcnow()
    with state.begin() as conn:
        for number in numbers:
            suppress(conn, number, SuppressionSource.CLI, now)
    print(f"added {len(numbers)} phone(s): no campaign sends them anything from now on")
    return _publish(state)


def _publish(state: sa.Engine) -> int:
    try:
        n = publish_suppressions(state, warehouse_from_env().open(), utcnow())
    except (WarehouseError, sa.exc.SQLAlchemyError) as exc:
        # The list in the state store is what stops sends; the copy is for the brand's CRM.
        print(f"the warehouse copy was not updated: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"published {n} phone(s) to the warehouse (outbound_suppression_list)")
    return 0


DEMO_BASE_URL = "http://127.0.0.1:8088"


def demo_link(warehouse: sa.Engine, day: str, secret: str, base_url: str) -> str | None:
    """The unsubscribe link of the first recipient sent a message on `day`, or None."""
    d = deliveries.c
    with warehouse.connect() as conn:
        phone = conn.execute(
            sa.select(d.recipient)
            .where(d.partition_date == day, d.status == Status.SENT)
            .order_by(d.campaign_key, d.recipient)
            .limit(1)
        ).scalar()
    return None if phone is None else unsubscribe_link(phone, base_url, secret)


def print_demo_link(day: str, serve_endpoint: bool) -> None:
    """After the demo's runs: a link that works against the endpoint, served here on request."""
    secret = os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32)
    base_url = os.environ.get(BASE_URL_ENV) or DEMO_BASE_URL
    link = demo_link(warehouse_from_env().open(), day, secret, base_url)
    if link is None:
        return
    print(f"\nunsubscribe link of the first recipient of {day}:\n  {link}")
    if not serve_endpoint:
        print(
            "  it works against the endpoint: `outbound-pipeline demo --serve-unsubscribe` serves "
            "it after the runs, or run `python -m outbound_pipeline.unsubscribe` with the same "
            f"{SECRET_ENV}" + ("" if os.environ.get(SECRET_ENV) else " (set it first)")
        )
        return
    state = state_from_env().open()
    host, port = urllib.parse.urlsplit(base_url).hostname, urllib.parse.urlsplit(base_url).port
    print("  open it and press Unsubscribe; Ctrl+C stops the endpoint", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        serve(create_app(secret, state), host or "127.0.0.1", port or 8088)
