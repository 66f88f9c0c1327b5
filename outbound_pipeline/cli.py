"""`outbound-pipeline`: check a campaigns file, run the demo, read the day's figures, manage send
halts and the suppression list, upgrade the stores' schemas."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from outbound_pipeline import cli_suppressions, ledger
from outbound_pipeline.clock import utcnow
from outbound_pipeline.config import BUNDLED_CONFIG, ConfigError, OutboundConfig, load_config
from outbound_pipeline.defs.campaigns.jobs import job_name
from outbound_pipeline.settings import (
    CONFIG_PATH,
    IADVIZE_GRAPHQL_URL,
    IADVIZE_TOKEN_URL,
    config_path,
    iadvize_mode,
    state_from_env,
    uses_embedded_warehouse,
    warehouse_from_env,
)
from outbound_pipeline.warehouse import (
    SchemaOutOfDate,
    daily_groups,
    daily_stats,
    database_message,
    embedded_warehouse_path,
    markdown_reference,
    reading,
)

STAT_COLUMNS = [
    "campaign_key",
    "partition_date",
    "audience_rows",
    "eligible",
    "rendered",
    "sent",
    "failed",
    "skipped",
    "deferred",
    "unknown",
    "replied",
    "reply_rate",
    "wrong_campaign",
    "conversions",
    "conversion_rate",
]
GROUP_COLUMNS = ["campaign_key", "group_name", "customers", "converted", "conversion_rate"]
HALT_COLUMNS = ["scope", "reason", "halted_at", "until", "run_id"]
# The run tag Dagster reads a partitioned job's partition from (`dagster job execute` has no option).
PARTITION_TAG = "dagster/partition"
# The demo's runs execute their steps in one process: a process per step costs seconds each.
IN_PROCESS_RUN_CONFIG = "execution:\n  config:\n    in_process: {}\n"
DESCRIPTION = (
    "Daily WhatsApp campaigns through iAdvize: check a campaigns file, run the demo, read the "
    "day's figures, manage send halts and the suppression list, print the analysts' column "
    "reference, upgrade the stores' schemas."
)
EPILOG = (
    "The Dagster UI: `dagster dev` (see the README). The sandbox iAdvize API on its own: "
    "`python -m outbound_pipeline.sandbox --help`."
)


def _warehouse() -> sa.Engine:
    """The warehouse: where the day's figures are."""
    return warehouse_from_env().open()


def _state() -> sa.Engine:
    """The state store: where the halts are."""
    return state_from_env().open()


def _print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    widths = {
        c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns
    }
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def check_config(path: str | None) -> int:
    """Validate a campaigns file (default: $OUTBOUND_CONFIG, else the bundled demo)."""
    source = path or config_path()
    try:
        config = load_config(source)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    name = source or f"{BUNDLED_CONFIG} (the bundled demo)"
    templates, campaigns = (
        _count(len(config.templates), "template"),
        _count(len(config.campaigns), "campaign"),
    )
    print(f"{name}: valid, {templates} and {campaigns}")
    return 0


def stats(day: str | None) -> int:
    engine = _warehouse()
    select = sa.select(daily_stats).order_by(
        daily_stats.c.partition_date, daily_stats.c.campaign_key
    )
    if day:
        select = select.where(daily_stats.c.partition_date == day)
    with reading(engine) as conn:
        rows = [dict(r) for r in conn.execute(select).mappings()]
    if not rows:
        print("no figures yet: materialize a campaign's report first")
        return 1
    _print_table(rows, STAT_COLUMNS)
    return 0


def _print_groups(day: str) -> None:
    """The day's holdout, contacted and variant groups with their conversion, when any."""
    g = daily_groups.c
    with reading(_warehouse()) as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                sa.select(daily_groups)
                .where(g.partition_date == day)
                .order_by(g.campaign_key, g.group_name)
            ).mappings()
        ]
    for row in rows:
        if row["conversion_rate"] is not None:
            row["conversion_rate"] = round(row["conversion_rate"], 4)
    if rows:
        print()
        _print_table(rows, GROUP_COLUMNS)


def _dagster_environment() -> dict[str, str]:
    """The environment of the dagster CLI: a Dagster home (kept, so the UI shows the runs)."""
    env = dict(os.environ)
    home = Path(env.get("DAGSTER_HOME") or (Path.cwd() / ".outbound" / "dagster_home"))
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text("telemetry:\n  enabled: false\n")
    env["DAGSTER_HOME"] = str(home.resolve())
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


@contextlib.contextmanager
def _demo_iadvize(env: dict[str, str], config: OutboundConfig) -> Iterator[str]:
    """The API the demo's runs call, described. In sandbox mode without URLs the sandbox is served
    on loopback while the demo runs (`env` names it to the runs): each step of a run is a process of
    its own, and the replies the sandbox simulates for the sends must still be there when the
    conversations step reads them."""
    if iadvize_mode() != "sandbox" or env.get(IADVIZE_GRAPHQL_URL):
        yield f"{iadvize_mode()} at {env.get(IADVIZE_GRAPHQL_URL)}"
        return
    from outbound_pipeline.sandbox import SandboxServer  # the sandbox loads in sandbox mode only

    with SandboxServer(config.templates) as server:
        env[IADVIZE_GRAPHQL_URL], env[IADVIZE_TOKEN_URL] = server.graphql_url, server.token_url
        yield (
            f"sandbox at {server.base_url} for the demo: no real message; replies, late replies, "
            "conversions and wrong-campaign attachments simulated (docs/conversations.md)"
        )


def demo(day: str, days: int = 1, serve_unsubscribe: bool = False) -> int:
    """Run every campaign's daily job for the `days` days ending on `day` through the dagster CLI,
    then show the figures (with the replies and conversions the sandbox simulated).

    Each run is recorded under its job (`<campaign>_daily`) and partition, so the UI's Jobs page
    shows the history and the report's plots have a point per day.
    """
    env = _dagster_environment()
    config = load_config(config_path())
    if uses_embedded_warehouse():
        print(f"warehouse: embedded SQLite at {embedded_warehouse_path()} (demo data)")
    last = dt.date.fromisoformat(day)
    run_days = [(last - dt.timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]
    failed = []
    run_config = Path(env["DAGSTER_HOME"]) / "demo_run_config.yaml"
    run_config.write_text(IN_PROCESS_RUN_CONFIG)
    with _demo_iadvize(env, config) as described:
        print(f"iAdvize: {described}")
        for run_day in run_days:
            for campaign in config.campaigns:
                print(f"\n== {campaign.key} {run_day} ==", flush=True)
                command = [
                    sys.executable, "-m", "dagster", "job", "execute", "-m", "outbound_pipeline",
                    "-j", job_name(campaign), "--tags", json.dumps({PARTITION_TAG: run_day}),
                    "-c", str(run_config),
                ]  # fmt: skip
                if subprocess.run(command, env=env).returncode != 0:
                    failed.append(f"{campaign.key} {run_day}")
    print()
    stats(day if days == 1 else None)
    _print_groups(day)
    cli_suppressions.print_demo_link(day, serve_unsubscribe)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


def halts_command(action: str, scope: str | None) -> int:
    engine = _state()
    with engine.begin() as conn:
        if action == "clear":
            if not scope:
                print("name the scope to clear: 'all' or 'campaign:<key>'")
                return 2
            n = ledger.clear_halt(conn, scope)
            print(f"cleared {n} halt(s) for {scope}")
            return 0
        rows = [dict(r) for r in conn.execute(sa.select(ledger.halts)).mappings()]
    if not rows:
        print("no halts: sending is allowed")
        return 0
    _print_table(rows, HALT_COLUMNS)
    return 0


def db_command(action: str) -> int:
    """`db current`: each store's schema revision; `db upgrade`: both stores to this code's."""
    state, warehouse = state_from_env().bare_engine(), warehouse_from_env().bare_engine()
    try:
        if action == "current":
            for store, revision, head in ledger.store_revisions(state, warehouse):
                shown = revision or "none (no pipeline tables yet)"
                verdict = "up to date" if revision == head else f"this code needs {head}"
                print(f"{store}: {shown} ({verdict})")
            return 0
        try:
            upgrade = ledger.upgrade_stores(state, warehouse)
        except sa.exc.SQLAlchemyError as exc:
            # The command carries on from where each store stands: run again, it finishes the job.
            print(
                f"db upgrade stopped: {database_message(exc)}. Fix the cause and run "
                "`outbound-pipeline db upgrade` again before any run: it carries on from where "
                "each store stands (`outbound-pipeline db current` shows it) and copies the ledger "
                "history if the ledger is still empty.",
                file=sys.stderr,
            )
            return 1
        for done in (upgrade.state, upgrade.warehouse):
            before = done.before or "no pipeline tables"
            print(f"{done.store}: {before} -> {done.after}")
        if upgrade.history_rows_carried:
            print(f"ledger history carried over: {upgrade.history_rows_carried} rows")
        return 0
    finally:
        state.dispose()
        warehouse.dispose()


def _day(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog="outbound-pipeline", description=DESCRIPTION, epilog=EPILOG
    )
    sub = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_check = sub.add_parser(
        "check-config", help="validate a campaigns file and count its templates and campaigns"
    )
    p_check.add_argument(
        "file", nargs="?", default=None,
        help=f"the YAML file (default: ${CONFIG_PATH}, else the bundled demo)",
    )  # fmt: skip
    p_demo = sub.add_parser(
        "demo", help="run every campaign's daily job for one day (or more) and print the figures"
    )
    p_demo.add_argument(
        "--date",
        type=_day,
        default=utcnow().date().isoformat(),
        help="partition YYYY-MM-DD (default: today, UTC)",
    )
    p_demo.add_argument(
        "--serve-unsubscribe",
        action="store_true",
        help="after the runs, serve the unsubscribe endpoint the printed link works against",
    )
    p_demo.add_argument(
        "--days", type=int, default=1, choices=range(1, 32), metavar="N",
        help="run the N days ending on --date, oldest first (default: 1)",
    )  # fmt: skip
    p_stats = sub.add_parser("stats", help="print the day's figures (outbound_daily_stats)")
    p_stats.add_argument(
        "--date", type=_day, default=None, help="only this day YYYY-MM-DD (default: every day)"
    )
    p_halts = sub.add_parser("halts", help="list or clear send halts")
    p_halts.add_argument(
        "action", choices=["list", "clear"], help="list the halts in force, or clear one"
    )
    p_halts.add_argument("scope", nargs="?", help="with clear: 'all' or 'campaign:<key>'")
    cli_suppressions.add_parser(sub)
    sub.add_parser(
        "columns",
        help="print the analysts' column reference of the pipeline's tables (Markdown)",
    )
    p_db = sub.add_parser(
        "db", help="the pipeline's own tables in both stores: their schema revision, its upgrade"
    )
    p_db.add_argument(
        "action", choices=["current", "upgrade"],
        help="current: each store's revision; upgrade: both stores to this code's (docs/migrations.md)",
    )  # fmt: skip
    return main_parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "demo":
        return demo(args.date, args.days, args.serve_unsubscribe)
    if args.command == "stats":
        return stats(args.date)
    if args.command == "columns":
        print(markdown_reference(), end="")
        return 0
    if args.command == "db":
        return db_command(args.action)
    if args.command == "suppressions":
        return cli_suppressions.run(args)
    return halts_command(args.action, args.scope)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _run(args)
    # A warehouse that cannot hold the state and no state URL; a schema to upgrade first.
    except (ledger.StateStoreError, SchemaOutOfDate) as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
