"""Send throughput: the real deliveries path against a bare aiohttp loop, same server, same run.

    python -m benchmarks.send_throughput [--messages 20000] [--concurrency 50] [--latency-ms 20]
                                         [--backend sqlite|postgres] [--rate 1000]

1. The sandbox iAdvize is served by `python -m outbound_pipeline.sandbox --latency-ms 20` in its own
   process (its own GIL, like a remote API), on a loopback port.
2. A fresh warehouse gets N clean customers (valid unique phones, all opted in); the campaign's
   audience and messages assets are materialised (not timed): N messages to send.
3. Bare: one aiohttp session, `concurrency` workers, login once, then the same N GraphQL mutations
   (same payloads) with nothing else: no database, no checks. This is the floor.
4. Pipeline: the `<campaign>/deliveries` asset through `dagster.materialize`, rate limit lifted
   (`max_send_rate: 0`), the same concurrency: reconcile, ledger claims with the last-moment
   checks, IAdvizeClient (httpx over the aiohttp transport), outcomes recorded in batches.

`--rate R` paces the pipeline at R messages/s instead (`max_send_rate: R`, WhatsApp's ceiling is
1,000): every claim then reserves its send slots in the warehouse, as in production; the bare loop
stays unpaced, so the ratio is then the pacing's, and the figure to read is how close to R it sends.

Figures: messages/s of both and pipeline/bare. The pipeline's rate is taken over the deliveries step
(reconcile + send loop + final counts and publication, from Dagster's step duration); the send
loop's own rate, the wall time of the whole `materialize` call, and the rate at which the sandbox
received the messages (from the first to the last, and its slowest whole second) are reported
beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import os
import statistics
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
    scratch_database,
    step_seconds,
    write_results,
)
from benchmarks.bare_send import bare_loop, payloads
from benchmarks.brand_tables import generate_brand_tables
from outbound_pipeline.clock import ClockResource
from outbound_pipeline.defs.campaigns.assets import (
    AUDIENCE,
    DELIVERIES,
    MESSAGES,
    asset_key,
    build_campaign_assets,
)
from outbound_pipeline.iadvize import forget_tokens
from outbound_pipeline.ledger import StateStoreResource
from outbound_pipeline.ledger import send_ledger as deliveries
from outbound_pipeline.unsubscribe import UnsubscribeLinksResource
from outbound_pipeline.warehouse import WarehouseResource, create_engine

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ledger_breakdown(engine: sa.Engine, day: str) -> dict[str, int]:
    d = deliveries.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(d.status, d.reason, sa.func.count())
            .where(d.campaign_key == CAMPAIGN_KEY, d.partition_date == day)
            .group_by(d.status, d.reason)
        ).all()
    return {f"{status}:{reason}": n for status, reason, n in rows}


def arrivals(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The rate at which the sandbox received the messages: from the first to the last, and per
    whole second between them (what WhatsApp's ceiling of messages per second is about)."""
    times = sorted(dt.datetime.fromisoformat(m["received_at"]).timestamp() for m in messages)
    if len(times) < 2:
        return {}
    span = times[-1] - times[0]
    per_second = collections.Counter(int(t - times[0]) for t in times)
    whole = [per_second[i] for i in range(int(span))]  # the last, partial second left out
    return {
        "first_to_last_seconds": round(span, 3),
        "msg_per_s_first_to_last": round((len(times) - 1) / span, 1) if span else None,
        "whole_seconds": len(whole),
        "per_second_median": statistics.median(whole) if whole else None,
        "per_second_min": min(whole, default=None),
        "per_second_max": max(whole, default=None),
    }


def one_round(
    args: argparse.Namespace,
    day: str,
    assets: list[Any],
    resources: dict[str, Any],
    url: str,
    sandbox: SandboxProcess,
) -> dict[str, Any]:
    """Prepare the day's partition, then the bare loop and the pipeline make the same N calls."""
    campaign_id = bench_config().campaign(CAMPAIGN_KEY).campaign_id
    started = time.perf_counter()
    for name in (AUDIENCE, MESSAGES):
        dg.materialize(
            assets,
            selection=[asset_key(CAMPAIGN_KEY, name)],
            partition_key=day,
            resources=resources,
            run_config=QUIET,
        )
    prepare_seconds = round(time.perf_counter() - started, 2)
    engine = create_engine(url)
    bodies = payloads(engine, campaign_id, day)
    print(
        f"[{day}] {len(bodies)} messages to send (prepared in {prepare_seconds} s); bare aiohttp loop...",
        flush=True,
    )

    sandbox.reset()
    bare = asyncio.run(bare_loop(sandbox.base_url, bodies, args.concurrency))
    sandbox.reset()
    print(f"[{day}] bare: {bare['msg_per_s']} msg/s; pipeline...", flush=True)

    ops: dict[str, Any] = {"max_send_rate": args.rate, "concurrency": args.concurrency}
    if args.batch_size:
        ops["batch_size"] = args.batch_size
    run_config = {**QUIET, "ops": {f"{CAMPAIGN_KEY}__{DELIVERIES}": {"config": ops}}}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = dg.materialize(
        assets,
        selection=[asset_key(CAMPAIGN_KEY, DELIVERIES)],
        partition_key=day,
        resources=resources,
        run_config=run_config,
    )
    wall = time.perf_counter() - started
    stats = sandbox.stats()
    received = arrivals(sandbox.messages())
    ledger = ledger_breakdown(engine, day)
    engine.dispose()
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    step = step_seconds(result)[f"{CAMPAIGN_KEY}__{DELIVERIES}"]
    sent = ledger.get("sent:accepted", 0)
    pipeline = {
        "sent": sent,
        "ledger": ledger,
        "sandbox_accepted": stats.get("accepted", 0),
        "sandbox_graphql_calls": stats.get("graphql_calls", 0),
        "step_seconds": step,
        "msg_per_s": round(sent / step, 1),
        "send_loop_msg_per_s": metadata["send_rate_msg_per_s"].value,
        "received_by_the_sandbox": received,
        "materialize_wall_seconds": round(wall, 3),
        "msg_per_s_over_materialize_wall": round(sent / wall, 1),
    }
    problems = []
    if bare["accepted"] != len(bodies):
        problems.append(f"the bare loop got {bare['accepted']}/{len(bodies)} accepted")
    if sent != len(bodies) or stats.get("accepted") != len(bodies):
        problems.append(
            f"the API accepted {stats.get('accepted')} and the ledger says sent {sent} of {len(bodies)}: {ledger}"
        )
    print(
        f"[{day}] pipeline: {pipeline['msg_per_s']} msg/s (ratio {pipeline['msg_per_s'] / bare['msg_per_s']:.3f})",
        flush=True,
    )
    return {
        "day": day,
        "messages": len(bodies),
        "prepare_seconds": prepare_seconds,
        "load_average_1min_before_pipeline": round(load_before, 2),
        "bare_aiohttp": bare,
        "pipeline": pipeline,
        "ratio": round(pipeline["msg_per_s"] / bare["msg_per_s"], 3),
        "ratio_send_loop_only": round(pipeline["send_loop_msg_per_s"] / bare["msg_per_s"], 3),
        "problems": problems,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = bench_config(tier=args.tier)
    assets = build_campaign_assets(config.campaign(CAMPAIGN_KEY), config)
    with SandboxProcess(args.latency_ms) as sandbox, scratch_database(args.backend, "send") as url:
        forget_tokens()
        engine = create_engine(url)
        generated = generate_brand_tables(engine, args.messages, messy=False)
        engine.dispose()
        first = dt.date.fromisoformat(DAY)
        rounds = []
        for k in reversed(range(args.rounds)):
            # One partition a day as in production, the clock set back to each day, oldest first: the
            # same customers, outside each other's pair-rate and 24 h limit windows.
            resources = {
                "warehouse": WarehouseResource(url=url),
                "state": StateStoreResource(url=url),
                "iadvize": iadvize_resource(sandbox.base_url),
                "clock": ClockResource(offset_seconds=-86400.0 * k),
                "unsubscribe_links": UnsubscribeLinksResource(),
            }
            rounds.append(
                one_round(
                    args,
                    (first - dt.timedelta(days=k)).isoformat(),
                    assets,
                    resources,
                    url,
                    sandbox,
                )
            )
        warehouse = database_version(url)
    median = statistics.median
    return {
        "settings": {
            "messages": args.messages,
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "rounds": args.rounds,
            "backend": args.backend,
            "warehouse": warehouse,
            "batch_size": args.batch_size or "the asset's default",
            "messaging_limit_tier": args.tier,
            "rate_limit": f"max_send_rate: {args.rate:g}"
            if args.rate
            else "lifted (max_send_rate: 0)",
        },
        "brand_tables": generated,
        "summary": {
            "bare_msg_per_s_median": round(
                median(r["bare_aiohttp"]["msg_per_s"] for r in rounds), 3
            ),
            "pipeline_msg_per_s_median": round(
                median(r["pipeline"]["msg_per_s"] for r in rounds), 3
            ),
            "send_loop_msg_per_s_median": round(
                median(r["pipeline"]["send_loop_msg_per_s"] for r in rounds), 3
            ),
            "received_msg_per_s_median": median(
                r["pipeline"]["received_by_the_sandbox"].get("msg_per_s_first_to_last") or 0
                for r in rounds
            ),
            "ratio_median": round(median(r["ratio"] for r in rounds), 3),
            "ratio_best": max(r["ratio"] for r in rounds),
            "every_message_sent_once": not any(r["problems"] for r in rounds),
        },
        "goals": {"pipeline_msg_per_s_at_least": 1000, "ratio_at_least": 0.8},
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.send_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--messages", type=int, default=20_000, help="messages to send (default 20000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="calls in flight, both loops (default 50)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=20.0, help="sandbox delay per call (default 20)"
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="warehouse holding the ledger",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="bare + pipeline pairs, each on a new partition (default 3; median reported)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=0, help="ledger claim size (default: the asset's)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="pipeline's max_send_rate, messages/s (default 0: lifted)",
    )
    parser.add_argument(
        "--tier", default="100K", help="messaging-limit tier of the campaign (default 100K)"
    )
    parser.add_argument("--output", default="send_throughput", help="results/<output>.json")
    args = parser.parse_args()
    figures = run(args)
    rows = []
    for r in figures["rounds"]:
        bare, pipeline = r["bare_aiohttp"], r["pipeline"]
        rows.append(
            (
                r["day"],
                bare["msg_per_s"],
                pipeline["msg_per_s"],
                r["ratio"],
                pipeline["send_loop_msg_per_s"],
                pipeline["received_by_the_sandbox"].get("msg_per_s_first_to_last"),
                pipeline["received_by_the_sandbox"].get("per_second_min"),
                pipeline["step_seconds"],
                "; ".join(r["problems"]) or "ok",
            )
        )
    summary = figures["summary"]
    rows.append(
        (
            "median",
            summary["bare_msg_per_s_median"],
            summary["pipeline_msg_per_s_median"],
            summary["ratio_median"],
            summary["send_loop_msg_per_s_median"],
            summary["received_msg_per_s_median"],
            "",
            "",
            "",
        )
    )
    print_table(
        f"send throughput: {args.messages} messages, concurrency {args.concurrency}, {args.latency_ms:g} ms per "
        f"call, {f'pipeline paced at {args.rate:g}/s' if args.rate else 'rate limit lifted'}, ledger on {args.backend} (pipeline = deliveries step incl. reconcile)",
        rows,
        header=(
            "round",
            "bare msg/s",
            "pipeline msg/s",
            "ratio",
            "send loop msg/s",
            "received msg/s",
            "slowest second",
            "step s",
            "check",
        ),
    )
    path = write_results(args.output, figures)
    print(f"\nwritten {path}")
    if not summary["every_message_sent_once"]:
        raise SystemExit(
            "some messages were not sent, or not recorded as sent: see the check column"
        )


if __name__ == "__main__":
    main()
