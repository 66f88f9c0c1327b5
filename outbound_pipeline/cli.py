"""`outbound-pipeline`: run the demo, read the day's figures, manage halts, serve the sandbox."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from outbound_pipeline import ledger
from outbound_pipeline.clock import utcnow
from outbound_pipeline.config import load_config
from outbound_pipeline.settings import CONFIG_PATH, warehouse_from_env
from outbound_pipeline.warehouse import daily_stats, embedded_warehouse_path, halts

STAT_COLUMNS = ["campaign_key", "partition_date", "audience_rows", "eligible", "rendered", "sent", "failed", "skipped", "deferred", "unknown"]


def _engine() -> sa.Engine:
    return warehouse_from_env().open()


def _print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def stats(day: str | None) -> int:
    engine = _engine()
    select = sa.select(daily_stats).order_by(daily_stats.c.partition_date, daily_stats.c.campaign_key)
    if day:
        select = select.where(daily_stats.c.partition_date == day)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select).mappings()]
    if not rows:
        print("no figures yet: materialize a campaign's report first")
        return 1
    _print_table(rows, STAT_COLUMNS)
    return 0


def demo(day: str) -> int:
    """Materialise every campaign's group for one day through the dagster CLI, then show the figures."""
    env = dict(os.environ)
    home = Path(env.get("DAGSTER_HOME") or (Path.cwd() / ".outbound" / "dagster_home"))
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text("telemetry:\n  enabled: false\n")
    env["DAGSTER_HOME"] = str(home.resolve())
    env.setdefault("PYTHONWARNINGS", "ignore")
    config = load_config(os.environ.get(CONFIG_PATH) or None)
    if not os.environ.get("OUTBOUND_WAREHOUSE_URL"):
        print(f"warehouse: embedded SQLite at {embedded_warehouse_path()} (demo data)")
    print(f"iAdvize: {os.environ.get('IADVIZE_MODE', 'sandbox')}")
    failed = []
    for campaign in config.campaigns:
        print(f"\n== {campaign.key} {day} ==", flush=True)
        command = [
            sys.executable, "-m", "dagster", "asset", "materialize", "-m", "outbound_pipeline",
            "--select", f"group:{campaign.key}", "--partition", day,
        ]
        if subprocess.run(command, env=env).returncode != 0:
            failed.append(campaign.key)
    print()
    stats(day)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


def halts_command(action: str, scope: str | None) -> int:
    engine = _engine()
    with engine.begin() as conn:
        if action == "clear":
            if not scope:
                print("name the scope to clear: 'all' or 'campaign:<key>'")
                return 2
            n = ledger.clear_halt(conn, scope)
            print(f"cleared {n} halt(s) for {scope}")
            return 0
        rows = [dict(r) for r in conn.execute(sa.select(halts)).mappings()]
    if not rows:
        print("no halts: sending is allowed")
        return 0
    _print_table(rows, ["scope", "reason", "halted_at", "until", "run_id"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outbound-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run every campaign for one day and print the figures")
    p_demo.add_argument("--date", default=utcnow().date().isoformat(), help="partition YYYY-MM-DD (default: today, UTC)")
    p_stats = sub.add_parser("stats", help="print outbound_daily_stats")
    p_stats.add_argument("--date", default=None)
    p_halts = sub.add_parser("halts", help="list or clear send halts")
    p_halts.add_argument("action", choices=["list", "clear"])
    p_halts.add_argument("scope", nargs="?")
    args = parser.parse_args(argv)
    if args.command == "demo":
        dt.date.fromisoformat(args.date)
        return demo(args.date)
    if args.command == "stats":
        return stats(args.date)
    return halts_command(args.action, args.scope)


if __name__ == "__main__":
    sys.exit(main())
