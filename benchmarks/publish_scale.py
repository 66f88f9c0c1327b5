"""Publishing a million-row ledger: the state store's `outbound_ledger` of one partition copied to
the warehouse's `outbound_deliveries` (ledger.publish_partition: one warehouse transaction that
deletes the partition's published rows and bulk-inserts the ledger's again).

    python -m benchmarks.publish_scale [--rows 1000000] [--layouts postgres>duckdb,postgres>postgres]

Each layout names the state store, then the warehouse (sqlite, postgres or duckdb). The ledger is
generated in the state store (90 % sent, 10 % skipped, every column the send step fills), then the
partition is published four times, each time in a fresh process: into an empty table, again with
nothing changed (a rerun's), after a tenth of the ledger's rows changed (two minutes of a send at
1,000 msg/s in a million-row day), after every row changed. Goal: under 10 s for 1M rows into
DuckDB or PostgreSQL, peak RSS under 1 GB.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from benchmarks._common import (
    CAMPAIGN_KEY,
    DAY,
    cpu_seconds,
    database_version,
    peak_rss_mb,
    print_table,
    run_phase,
    scratch_database,
    write_results,
)

MODULE = "benchmarks.publish_scale"
BASE = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)


def _ledger_rows(count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        sent = i % 10 != 0
        phone = f"+336{i:08d}"
        at = BASE + dt.timedelta(milliseconds=i)
        yield {
            "campaign_key": CAMPAIGN_KEY,
            "partition_date": DAY,
            "delivery_key": phone if sent else f"row:{i:032x}",
            "row_key": f"{i:032x}",
            "customer_id": f"C{i:07d}",
            "recipient": phone,
            "campaign_id": "6f1c0a52-3b7e-4d4a-9a51-0c2f7d9e8b11",
            "sender": "+33644646081",
            "limit_scope": "sender:+33644646081",
            "template_name": "order_ready_v1",
            "language": "fr",
            "category": "UTILITY",
            "header_params_json": None,
            "body_params_json": '["Zoé", "CMD-1", "Lyon Part-Dieu"]',
            "status": "sent" if sent else "skipped",
            "reason": None if sent else "opted_out",
            "error_code": None,
            "retryable": False,
            "message_id": f"msg-{i}" if sent else None,
            "message_text": "Bonjour Zoé, votre commande CMD-1 est prête à Lyon Part-Dieu"
            if sent
            else None,
            "attempts": 1 if sent else 0,
            "claim_token": None,
            "claimed_at": at if sent else None,
            "sent_at": at if sent else None,
            "attribution_expires_at": at + dt.timedelta(days=3) if sent else None,
            "not_before": None,
            "resend_requested_by": None,
            "run_id": "bench-run",
            "updated_at": at,
        }


def generate_ledger(state_url: str, count: int) -> float:
    from outbound_pipeline.ledger import create_state_tables, send_ledger
    from outbound_pipeline.warehouse import create_engine, insert_rows, refresh_statistics

    started = time.perf_counter()
    engine = create_engine(state_url)
    create_state_tables(engine)
    rows = _ledger_rows(count)
    with engine.begin() as conn:
        while batch := list(itertools.islice(rows, 50_000)):
            insert_rows(conn, send_ledger, batch)
    refresh_statistics(engine, send_ledger)
    engine.dispose()
    return round(time.perf_counter() - started, 2)


# The publications measured, in order, and what changes in the ledger before each: nothing (the
# first, into an empty table; then a republication, as a rerun's), a tenth of the rows (as two
# minutes of a send at 1,000 msg/s change in a million-row day), every row.
PUBLICATIONS = (("first", None), ("unchanged", None), ("tenth_changed", "0"), ("all_changed", ""))


def change_ledger(state_url: str, customer_ids_ending: str) -> int:
    """Change the ledger rows whose customer ID ends so ("": every row), as an outcome would."""
    import sqlalchemy as sa

    from outbound_pipeline.ledger import send_ledger
    from outbound_pipeline.warehouse import create_engine

    engine = create_engine(state_url)
    with engine.begin() as conn:
        changed = conn.execute(
            sa.update(send_ledger)
            .where(send_ledger.c.customer_id.like(f"%{customer_ids_ending}"))
            .values(run_id="bench-rerun", attempts=send_ledger.c.attempts + 1)
        ).rowcount
    engine.dispose()
    return changed


def phase_publish(state_url: str, warehouse_url: str) -> dict[str, Any]:
    from outbound_pipeline.ledger import publish_partition
    from outbound_pipeline.warehouse import create_engine, create_owned_tables, metadata

    state, warehouse = create_engine(state_url), create_engine(warehouse_url)
    create_owned_tables(warehouse, metadata)
    started, cpu = time.perf_counter(), cpu_seconds()
    publication = publish_partition(state, warehouse, CAMPAIGN_KEY, DAY)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    state.dispose()
    warehouse.dispose()
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "rows": publication.rows,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_layout(args: argparse.Namespace, layout: str) -> dict[str, Any]:
    state_kind, _, warehouse_kind = layout.partition(">")
    with contextlib.ExitStack() as stack:
        state_url = stack.enter_context(scratch_database(state_kind, "publish_state"))
        warehouse_url = stack.enter_context(scratch_database(warehouse_kind, "publish_wh"))
        print(f"{layout}: generating a ledger of {args.rows} rows...", flush=True)
        figures: dict[str, Any] = {
            "state": database_version(state_url),
            "warehouse": database_version(warehouse_url),
            "generate_seconds": generate_ledger(state_url, args.rows),
        }
        for name, ending in PUBLICATIONS:
            if ending is not None:
                figures[f"{name}_rows"] = change_ledger(state_url, ending)
            print(f"  publish ({name})...", flush=True)
            try:
                figures[name] = run_phase(
                    MODULE,
                    ["--phase", "publish", "--state", state_url, "--warehouse", warehouse_url],
                    timeout=args.phase_timeout,
                )
            except subprocess.TimeoutExpired:
                figures[name] = {"timed_out_after_seconds": args.phase_timeout}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="ledger rows (default 1000000)")
    parser.add_argument(
        "--layouts",
        default="postgres>duckdb,postgres>postgres",
        help="comma-separated state>warehouse pairs of sqlite, postgres, duckdb",
    )
    parser.add_argument("--phase-timeout", type=float, default=900)
    parser.add_argument("--output", default="publish_scale", help="results/<output>.json")
    parser.add_argument("--phase", choices=["publish"], help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase_publish(args.state, args.warehouse)))
        return
    layouts = [layout.strip() for layout in args.layouts.split(",") if layout.strip()]
    results = {layout: run_layout(args, layout) for layout in layouts}
    rows = []
    for layout, figures in results.items():
        for name, _ in PUBLICATIONS:
            phase = figures[name]
            if "seconds" not in phase:
                rows.append((layout, name, f"> {phase['timed_out_after_seconds']:g}", "-", "-"))
            else:
                rows.append(
                    (layout, name, phase["seconds"], phase["cpu_seconds"], phase["peak_rss_mb"])
                )
    print_table(
        f"publishing a ledger of {args.rows} rows (state > warehouse)",
        rows,
        header=("layout", "publication", "seconds", "CPU s (this process)", "peak RSS MB"),
    )
    path = write_results(
        args.output,
        {
            "settings": {"rows": args.rows, "layouts": layouts},
            "results": results,
            "goals": {"seconds_under": 10, "peak_rss_mb_under": 1024},
        },
    )
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
