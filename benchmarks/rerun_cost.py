"""The cost of re-running a fully sent partition: calls made (must be zero) and wall time.

    python -m benchmarks.rerun_cost [--rows 100000] [--backend sqlite|postgres] [--setup direct|send]
                                    [--phase-timeout 300]

1. A fresh warehouse gets `--rows` clean customers (valid unique phones, all opted in), and the
   campaign's audience and messages assets are materialised: `--rows` messages.
2. The partition is made fully sent:
   - `--setup direct` (default): every message is written to the ledger as `sent` by one
     INSERT ... SELECT from outbound_messages, the state a finished run leaves (fast and exact);
   - `--setup send`: the deliveries asset sends them all to the sandbox (rate limit lifted).
3. Re-runs, each in its own process against the sandbox served on loopback (its call counter tells
   the calls made):
   - `deliveries`: the send step alone (a retried or re-launched step);
   - `partition`: the whole partition again, audience -> messages -> deliveries -> report (a
     backfill over a day already sent).
Figures: calls made and wall time of each (Dagster's step durations beside). A re-run still going
after --phase-timeout seconds is stopped and reported as such.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import time
from typing import Any

import dagster as dg
import sqlalchemy as sa

from benchmarks._common import (
    CAMPAIGN_KEY,
    DAY,
    SandboxProcess,
    bench_config,
    database_version,
    iadvize_resource,
    print_table,
    run_phase,
    scratch_database,
    step_seconds,
    write_results,
)
from benchmarks.brand_tables import generate_brand_tables
from outbound_pipeline.clock import ClockResource
from outbound_pipeline.defs.campaigns.assets import (
    AUDIENCE,
    DELIVERIES,
    MESSAGES,
    REPORT,
    asset_key,
    build_campaign_assets,
)
from outbound_pipeline.ledger import StateStoreResource
from outbound_pipeline.ledger import send_ledger as deliveries
from outbound_pipeline.unsubscribe import UnsubscribeLinksResource
from outbound_pipeline.warehouse import WarehouseResource, create_engine, messages

MODULE = "benchmarks.rerun_cost"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SEND_CONFIG = {
    "ops": {f"{CAMPAIGN_KEY}__{DELIVERIES}": {"config": {"max_send_rate": 0, "concurrency": 50}}}
}


def _resources(url: str, sandbox_url: str | None) -> dict[str, Any]:
    return {
        "warehouse": WarehouseResource(url=url),
        "state": StateStoreResource(url=url),
        "iadvize": iadvize_resource(sandbox_url),
        "clock": ClockResource(),
        "unsubscribe_links": UnsubscribeLinksResource(),
    }


def _assets() -> list[dg.AssetsDefinition]:
    config = bench_config(tier="100K")
    return build_campaign_assets(config.campaign(CAMPAIGN_KEY), config)


def mark_all_sent(url: str) -> int:
    """The ledger a finished run leaves: one `sent` row per rendered message (INSERT ... SELECT)."""
    config = bench_config(tier="100K")
    campaign = config.campaign(CAMPAIGN_KEY)
    now = dt.datetime.now(dt.UTC)
    m = messages.c
    token = "bench-setup:0000000000000000"

    def literal(value: Any, type_: Any = None) -> Any:
        return sa.literal(value, type_) if type_ is not None else sa.literal(value)

    select = sa.select(
        m.campaign_key,
        m.partition_date,
        m.recipient,
        m.row_key,
        m.customer_id,
        m.recipient,
        literal(campaign.campaign_id),
        literal(campaign.sender),
        literal(campaign.limit_scope),
        m.template_name,
        m.language,
        m.category,
        m.header_params_json,
        m.body_params_json,
        literal("sent"),
        literal("accepted"),
        literal(False, sa.Boolean()),
        (literal("gBGbench") + m.row_key),
        m.preview_text,
        literal(1, sa.Integer()),
        literal(token),
        literal(now, sa.DateTime(timezone=True)),
        literal(now, sa.DateTime(timezone=True)),
        literal(
            now + dt.timedelta(hours=campaign.attribution_window_hours), sa.DateTime(timezone=True)
        ),
        literal("bench-setup"),
        literal(now, sa.DateTime(timezone=True)),
    ).where(m.campaign_key == CAMPAIGN_KEY, m.partition_date == DAY, m.rendered == sa.true())
    columns = [
        "campaign_key",
        "partition_date",
        "delivery_key",
        "row_key",
        "customer_id",
        "recipient",
        "campaign_id",
        "sender",
        "limit_scope",
        "template_name",
        "language",
        "category",
        "header_params_json",
        "body_params_json",
        "status",
        "reason",
        "retryable",
        "message_id",
        "message_text",
        "attempts",
        "claim_token",
        "claimed_at",
        "sent_at",
        "attribution_expires_at",
        "run_id",
        "updated_at",
    ]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return conn.execute(sa.insert(deliveries).from_select(columns, select)).rowcount
    finally:
        engine.dispose()


def ledger_statuses(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            d = deliveries.c
            return dict(
                conn.execute(
                    sa.select(d.status, sa.func.count())
                    .where(d.campaign_key == CAMPAIGN_KEY, d.partition_date == DAY)
                    .group_by(d.status)
                ).all()
            )
    finally:
        engine.dispose()


# -- the re-run phase (its own process) ------------------------------------------------------


def phase_rerun(url: str, sandbox_url: str, what: str) -> dict[str, Any]:
    names = [DELIVERIES] if what == "deliveries" else [AUDIENCE, MESSAGES, DELIVERIES, REPORT]
    started = time.perf_counter()
    result = dg.materialize(
        _assets(),
        selection=[asset_key(CAMPAIGN_KEY, n) for n in names],
        partition_key=DAY,
        resources=_resources(url, sandbox_url),
        run_config={**QUIET, **SEND_CONFIG},
    )
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "step_seconds": step_seconds(result),
        "success": result.success,
    }


# -- the orchestration -----------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    assets = _assets()
    with SandboxProcess(args.latency_ms) as sandbox, scratch_database(args.backend, "rerun") as url:
        engine = create_engine(url)
        generated = generate_brand_tables(engine, args.rows, messy=False)
        engine.dispose()
        resources = _resources(url, sandbox.base_url)
        print(f"{args.rows} customers; audience and messages...", flush=True)
        started = time.perf_counter()
        for name in (AUDIENCE, MESSAGES):
            dg.materialize(
                assets,
                selection=[asset_key(CAMPAIGN_KEY, name)],
                partition_key=DAY,
                resources=resources,
                run_config=QUIET,
            )
        prepare = {"audience_and_messages_seconds": round(time.perf_counter() - started, 2)}
        started = time.perf_counter()
        if args.setup == "direct":
            print("writing the ledger as fully sent...", flush=True)
            prepare["rows_marked_sent"] = mark_all_sent(url)
        else:
            print("sending the partition...", flush=True)
            result = dg.materialize(
                assets,
                selection=[asset_key(CAMPAIGN_KEY, DELIVERIES)],
                partition_key=DAY,
                resources=resources,
                run_config={**QUIET, **SEND_CONFIG},
            )
            prepare["first_send_step_seconds"] = step_seconds(result)
        prepare["setup_seconds"] = round(time.perf_counter() - started, 2)
        before = ledger_statuses(url)
        if before.get("sent") != args.rows or len(before) != 1:
            raise SystemExit(f"the partition is not fully sent: {before}")
        print(f"fully sent: {before}", flush=True)

        reruns: dict[str, Any] = {}
        for what in ("deliveries", "partition"):
            calls_before = sandbox.stats().get("graphql_calls", 0)
            print(f"re-run: {what}...", flush=True)
            try:
                figures = run_phase(
                    MODULE,
                    [
                        "--phase",
                        "rerun",
                        "--what",
                        what,
                        "--url",
                        url,
                        "--sandbox",
                        sandbox.base_url,
                    ],
                    timeout=args.phase_timeout,
                )
            except subprocess.TimeoutExpired:
                figures = {"timed_out_after_seconds": args.phase_timeout}
            figures["calls"] = sandbox.stats().get("graphql_calls", 0) - calls_before
            figures["ledger_after"] = ledger_statuses(url)
            reruns[what] = figures
        warehouse = database_version(url)
    return {
        "settings": {
            "rows": args.rows,
            "backend": args.backend,
            "warehouse": warehouse,
            "setup": args.setup,
            "sandbox_latency_ms": args.latency_ms,
        },
        "brand_tables": generated,
        "prepare": prepare,
        "ledger_before": before,
        "reruns": reruns,
        "goals": {"calls": 0, "seconds_under": 10},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rows", type=int, default=100_000, help="rows of the partition (default 100000)"
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="warehouse (default sqlite)",
    )
    parser.add_argument(
        "--setup",
        choices=("direct", "send"),
        default="direct",
        help="how the partition becomes fully sent",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=20.0, help="sandbox delay per call (default 20)"
    )
    parser.add_argument(
        "--phase-timeout",
        type=float,
        default=300,
        help="seconds before a re-run is stopped (default 300)",
    )
    parser.add_argument("--output", default="rerun_cost", help="results/<output>.json")
    parser.add_argument("--phase", choices=("rerun",), help=argparse.SUPPRESS)
    parser.add_argument("--what", choices=("deliveries", "partition"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--sandbox", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase_rerun(args.url, args.sandbox, args.what), default=str))
        return

    figures = run(args)
    rows = []
    for what, f in figures["reruns"].items():
        seconds = f.get("seconds", f"> {f.get('timed_out_after_seconds', 0):g} (stopped)")
        steps = ", ".join(f"{k.split('__')[-1]} {v}" for k, v in f.get("step_seconds", {}).items())
        rows.append((what, f["calls"], seconds, steps))
    print_table(
        f"re-running a fully sent partition of {args.rows} rows ({args.backend}, setup {args.setup})",
        rows,
        header=("re-run", "calls", "seconds", "step seconds"),
    )
    path = write_results(args.output, figures)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
