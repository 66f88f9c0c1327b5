"""`outbound-pipeline suppressions add|list|publish`: the pipeline's suppression list by hand.

`add` records phones (source `cli`) in the state store, where they take effect at once for every
campaign, then publishes the list to the warehouse (`outbound_suppression_list`); `list` prints it,
phones masked unless `--full`; `publish` copies it to the warehouse again.
"""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa

from outbound_pipeline.clock import utcnow
from outbound_pipeline.ledger import publish_suppressions
from outbound_pipeline.settings import state_from_env, warehouse_from_env
from outbound_pipeline.unsubscribe import SuppressionSource, list_suppressions, suppress
from outbound_pipeline.warehouse import WarehouseError
from outbound_pipeline.whatsapp import mask, normalise


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "suppressions",
        help="add phones to the suppression list (no message from any campaign), list or publish it",
    )
    p.add_argument("action", choices=["add", "list", "publish"])
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
