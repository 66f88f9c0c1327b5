"""A million-customer audience: audience + messages for one partition against a bare pandas.read_sql.

    python -m benchmarks.audience_scale [--rows 1000000] [--backends sqlite,postgres,duckdb]
                                        [--phase-timeout 900] [--profile]

For each backend, a fresh warehouse (a temp SQLite or DuckDB file; a new database on the PostgreSQL
server, dropped afterwards; a DuckDB warehouse gets its state store in a SQLite file beside it) gets `--rows` customers and their consent history: the contract's `customers` and
`whatsapp_consents`, with a realistic mix (about 80 % E.164 phones, 10 % national format, 4 % Belgian,
3 % malformed, 1 % missing, 2 % shared; 88 % opted in, 6 % opted out, 6 % never asked, a quarter with
an older consent row). The campaign's query is every customer (`benchmarks/_common.py: AUDIENCE_SQL`).

Each phase runs in its own process, so its peak RSS (VmHWM) is its own:
- read_sql: `pandas.read_sql` of the query the audience asset runs (the campaign's SQL wrapped with the
  current-consent join, `audience.audience_sql`): the bare minimum that brings the audience into
  Python. `read_sql_raw` does the same for the campaign's SQL alone, for reference.
- io_floor (`benchmarks/io_floor.py`): the reads and writes the two assets cannot avoid, with
  nothing else: the same query streamed in the same chunks, every row written to
  `outbound_audience` as returned (in the stages' transactions: `warehouse.StageWrites`, rows as
  lists in column order as the stages build them), the opted-in rows read back and written to
  `outbound_messages`. No phone parsing, verdicts, rendering or checks.
- pipeline: the `<campaign>/audience` then `<campaign>/messages` assets through `dagster.materialize`
  (extraction, consent, phone normalisation, verdicts, duplicates, the blocking checks, rendering,
  writing both tables).

Figures: wall time and peak RSS of each, and pipeline / read_sql, io_floor / read_sql and
pipeline / io_floor; CPU seconds of the phase's process (`cpu_seconds`) and, for the pipeline, of
the stages' worker processes (`workers_cpu_seconds`). A phase that has not finished after
--phase-timeout seconds is stopped and reported as such.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import subprocess
import time
from typing import Any

from benchmarks._common import (
    CAMPAIGN_KEY,
    DAY,
    bench_config,
    cpu_seconds,
    current_rss_mb,
    database_version,
    descendants_cpu_seconds,
    hide_password,
    iadvize_resource,
    peak_rss_mb,
    print_table,
    run_phase,
    scratch_database,
    step_seconds,
    write_results,
)
from benchmarks.brand_tables import generate_brand_tables
from benchmarks.io_floor import phase_io_floor

MODULE = "benchmarks.audience_scale"
PHASES = ("read_sql", "read_sql_raw", "io_floor", "pipeline")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


# -- phases (each in its own process) --------------------------------------------------------


def phase_read_sql(url: str, raw: bool) -> dict[str, Any]:
    import pandas as pd
    import sqlalchemy as sa

    from outbound_pipeline.audience import audience_sql
    from outbound_pipeline.warehouse import create_engine

    config = bench_config()
    campaign = config.campaign(CAMPAIGN_KEY)
    engine = create_engine(url)
    sql = campaign.audience_sql if raw else audience_sql(campaign, config, engine.dialect)
    params = {} if raw else {"outbound_consent_category": campaign.consent_category}
    baseline = current_rss_mb()
    started = time.perf_counter()
    with engine.connect() as conn:
        frame = pd.read_sql(sa.text(sql), conn, params=params)
    seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "seconds": round(seconds, 2),
        "rows": len(frame),
        "columns": len(frame.columns),
        "peak_rss_mb": peak_rss_mb(),
        "cpu_seconds": cpu_seconds(),
        "rss_after_imports_mb": baseline,
    }


def state_url(url: str) -> str:
    """The state store: the warehouse itself, or a SQLite file beside a DuckDB warehouse."""
    if not url.startswith("duckdb"):
        return url
    return "sqlite:///" + url.removeprefix("duckdb:///").removesuffix(".duckdb") + "_state.sqlite"


def phase_pipeline(url: str, profile: bool) -> dict[str, Any]:
    import dagster as dg
    import sqlalchemy as sa

    from outbound_pipeline.clock import ClockResource
    from outbound_pipeline.defs.campaigns.assets import (
        AUDIENCE,
        MESSAGES,
        asset_key,
        build_campaign_assets,
    )
    from outbound_pipeline.ledger import StateStoreResource
    from outbound_pipeline.unsubscribe import UnsubscribeLinksResource
    from outbound_pipeline.warehouse import WarehouseResource, audience, create_engine, messages

    config = bench_config()
    assets = build_campaign_assets(config.campaign(CAMPAIGN_KEY), config)
    resources = {
        "warehouse": WarehouseResource(url=url),
        "state": StateStoreResource(url=state_url(url)),
        "iadvize": iadvize_resource(None),
        "clock": ClockResource(),
        "unsubscribe_links": UnsubscribeLinksResource(),
    }
    baseline = current_rss_mb()
    profiler = cProfile.Profile() if profile else None
    steps: dict[str, float] = {}
    checks: dict[str, bool] = {}
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for name in (AUDIENCE, MESSAGES):
        result = dg.materialize(
            assets,
            selection=[asset_key(CAMPAIGN_KEY, name)],
            partition_key=DAY,
            resources=resources,
            run_config=QUIET,
        )
        steps.update(step_seconds(result))
        for evaluation in result.get_asset_check_evaluations():
            checks[evaluation.check_name] = evaluation.passed
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    workers_cpu = descendants_cpu_seconds()
    engine = create_engine(url)
    with engine.connect() as conn:
        a, m = audience.c, messages.c
        day = sa.and_(a.campaign_key == CAMPAIGN_KEY, a.partition_date == DAY)
        audience_rows = conn.execute(sa.select(sa.func.count()).where(day)).scalar_one()
        eligible = conn.execute(
            sa.select(sa.func.count()).where(day, a.eligible == sa.true())
        ).scalar_one()
        rendered = conn.execute(
            sa.select(sa.func.count()).where(
                m.campaign_key == CAMPAIGN_KEY, m.partition_date == DAY, m.rendered == sa.true()
            )
        ).scalar_one()
    engine.dispose()
    out: dict[str, Any] = {
        "seconds": round(seconds, 2),
        "step_seconds": steps,
        "audience_rows": audience_rows,
        "eligible": eligible,
        "rendered": rendered,
        "checks_passed": checks,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_seconds": cpu_seconds(),
        "workers_cpu_seconds": workers_cpu,
        "rss_after_imports_mb": baseline,
    }
    if profiler:
        out["profile"] = _profile_top(profiler)
    return out


def _profile_top(profiler: cProfile.Profile, n: int = 25) -> dict[str, list[str]]:
    """The functions with the most own time and the most cumulative time (package code first)."""
    out = {}
    for key in ("tottime", "cumulative"):
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats(key).print_stats(n)
        lines = [line.rstrip() for line in buffer.getvalue().splitlines()]
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
        out[key] = [line for line in lines[start : start + n + 1] if line.strip()]
    return out


# -- the orchestration -----------------------------------------------------------------------


def _phase(args: argparse.Namespace, name: str, url: str) -> dict[str, Any]:
    extra: list[str] = []
    if args.profile and name == "pipeline":
        extra.append("--profile")
    print(f"  {name}...", flush=True)
    try:
        return run_phase(
            MODULE, ["--phase", name, "--url", url, *extra], timeout=args.phase_timeout
        )
    except subprocess.TimeoutExpired:
        return {"timed_out_after_seconds": args.phase_timeout}


def run_backend(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    with scratch_database(backend, "scale") as url:
        from outbound_pipeline.warehouse import create_engine

        print(f"{backend}: generating {args.rows} customers at {hide_password(url)}...", flush=True)
        engine = create_engine(url)
        generated = generate_brand_tables(engine, args.rows, messy=True)
        engine.dispose()
        figures: dict[str, Any] = {"warehouse": database_version(url), "brand_tables": generated}
        for name in PHASES:
            figures[name] = _phase(args, name, url)
    read, floor, pipeline = figures["read_sql"], figures["io_floor"], figures["pipeline"]
    if "seconds" in read and "seconds" in pipeline:
        figures["ratio_pipeline_to_read_sql"] = round(pipeline["seconds"] / read["seconds"], 2)
    if "seconds" in read and "seconds" in floor:
        figures["ratio_io_floor_to_read_sql"] = round(floor["seconds"] / read["seconds"], 2)
    if "seconds" in floor and "seconds" in pipeline:
        figures["ratio_pipeline_to_io_floor"] = round(pipeline["seconds"] / floor["seconds"], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="customers (default 1000000)")
    parser.add_argument(
        "--backends",
        default="sqlite,postgres,duckdb",
        help="comma-separated: sqlite, postgres, duckdb (default all three)",
    )
    parser.add_argument(
        "--phase-timeout",
        type=float,
        default=900,
        help="seconds before a phase is stopped (default 900)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the pipeline phase (slower); top functions in the JSON",
    )
    parser.add_argument("--output", default="audience_scale", help="results/<output>.json")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        if args.phase == "pipeline":
            result = phase_pipeline(args.url, args.profile)
        elif args.phase == "io_floor":
            result = phase_io_floor(args.url)
        else:
            result = phase_read_sql(args.url, raw=args.phase == "read_sql_raw")
        print(json.dumps(result, default=str))
        return

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = {backend: run_backend(args, backend) for backend in backends}
    rows = []
    for backend, f in results.items():
        for name in PHASES:
            phase = f[name]
            if "seconds" not in phase:
                rows.append(
                    (backend, name, f"> {phase['timed_out_after_seconds']:g} (stopped)", "-", "-")
                )
                continue
            ratio = {
                "read_sql": "1.0",
                "io_floor": f.get("ratio_io_floor_to_read_sql", "-"),
                "pipeline": f.get("ratio_pipeline_to_read_sql", "-"),
            }.get(name, "")
            rows.append((backend, name, phase["seconds"], phase["peak_rss_mb"], ratio))
    print_table(
        f"audience + messages of one partition, {args.rows} customers (each phase in its own process)",
        rows,
        header=("backend", "phase", "seconds", "peak RSS MB", "vs read_sql"),
    )
    path = write_results(
        args.output,
        {
            "settings": {
                "rows": args.rows,
                "backends": backends,
                "audience_sql": bench_config().campaign(CAMPAIGN_KEY).audience_sql,
            },
            "results": results,
            "goals": {
                "pipeline_at_most_x_io_floor": 1.5,
                "duckdb_pipeline_at_most_x_read_sql": 3.0,
                "peak_rss_mb_under": 1024,
            },
        },
    )
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
