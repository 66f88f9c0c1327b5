"""Shared pieces of the benchmarks: the sandbox in its own process, scratch databases, the campaign
configuration the benchmarks run, measures, result files and tables. The brand tables they read:
`benchmarks.brand_tables`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml

from outbound_pipeline.config import OutboundConfig, parse_config
from outbound_pipeline.iadvize import IAdvizeResource
from outbound_pipeline.warehouse import (
    PostgresUnreachable,
    create_engine,
    temporary_postgres_database,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = RESULTS_DIR.parent.parent
POSTGRES_ENV = "OUTBOUND_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY = "2026-11-24"
CAMPAIGN_KEY = "bench"
CONSENT_CATEGORY = "order_updates"
SENDER = "+33644646081"
CAMPAIGN_ID = "6f1c0a52-3b7e-4d4a-9a51-0c2f7d9e8b11"
TEMPLATE = {
    "name": "bench_notice_v1",
    "language": "fr",
    "category": "UTILITY",
    "body": "Bonjour {{1}}, votre commande vous attend dans votre magasin {{2}}.",
}
# The "simple audience query" of the benchmarks: every customer, the columns the template reads.
AUDIENCE_SQL = (
    "SELECT c.customer_id, c.phone, c.country, c.first_name, c.preferred_store AS store_name "
    "FROM customers AS c"
)


def postgres_server_url() -> str:
    return (
        os.environ.get(POSTGRES_ENV)
        or os.environ.get("OUTBOUND_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES
    )


def hide_password(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


# -- configuration ---------------------------------------------------------------------------


def bench_config(*, tier: str = "unlimited", max_send_rate: float = 1000) -> OutboundConfig:
    """One UTILITY campaign over every customer (no :partition_date filter: the whole table)."""
    return parse_config(
        bench_config_raw(tier=tier, max_send_rate=max_send_rate), "<benchmark config>"
    )


def bench_config_file(directory: str | Path) -> Path:
    """The configuration as a YAML file, for the sandbox process (it must know the template)."""
    path = Path(directory) / "bench_campaigns.yaml"
    path.write_text(
        yaml.safe_dump(bench_config_raw(), allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    return path


def bench_config_raw(*, tier: str = "unlimited", max_send_rate: float = 1000) -> dict[str, Any]:
    campaign = {
        "key": CAMPAIGN_KEY,
        "campaign_id": CAMPAIGN_ID,
        "sender": SENDER,
        "template": TEMPLATE["name"],
        "language": TEMPLATE["language"],
        "consent_category": CONSENT_CATEGORY,
        "audience_sql": AUDIENCE_SQL,
        "variables": {"body": {1: "first_name", 2: "store_name"}},
        "start_date": "2026-01-01",
        "messaging_limit": {"scope": "sender", "tier": tier},
        "max_send_rate": max_send_rate,
    }
    return {"templates": [TEMPLATE], "campaigns": [campaign]}


def iadvize_resource(base_url: str | None) -> IAdvizeResource:
    """The resource pointed at a sandbox served on loopback (None: the in-process sandbox)."""
    if base_url is None:
        return IAdvizeResource(mode="sandbox", timeout_seconds=30)
    return IAdvizeResource(
        mode="sandbox",
        graphql_url=f"{base_url}/graphql",
        token_url=f"{base_url}/oauth2/token",
        username="bench",
        password="not-a-real-password",
        timeout_seconds=30,
    )


# -- scratch databases -----------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(backend: str, label: str, keep: bool = False) -> Iterator[str]:
    """A fresh warehouse URL: a SQLite file in a temp dir, or a new database on the PostgreSQL server
    (dropped afterwards unless keep)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"outbound_bench_{label}_") as tmp:
            yield f"sqlite:///{Path(tmp) / 'warehouse.sqlite'}"
        return
    if backend == "duckdb":
        with tempfile.TemporaryDirectory(prefix=f"outbound_bench_{label}_") as tmp:
            yield f"duckdb:///{Path(tmp) / 'warehouse.duckdb'}"
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}: sqlite, duckdb or postgres")
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(
                temporary_postgres_database(
                    postgres_server_url(), f"outbound_bench_{label}", keep=keep
                )
            )
        except PostgresUnreachable as exc:
            raise SystemExit(f"{exc}; set {POSTGRES_ENV} or use the sqlite backend") from None
        yield url
        if keep:
            print(f"kept database {sa.make_url(url).database}")


def database_version(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                return conn.exec_driver_sql("SHOW server_version").scalar_one()
            if engine.dialect.name == "duckdb":
                return "DuckDB " + conn.exec_driver_sql("select version()").scalar_one()
            return "SQLite " + conn.exec_driver_sql("select sqlite_version()").scalar_one()
    finally:
        engine.dispose()


# -- the sandbox in its own process ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SandboxProcess:
    """`python -m outbound_pipeline.sandbox` in a child process: the server has its own GIL."""

    def __init__(self, latency_ms: float) -> None:
        self.latency_ms = latency_ms
        self._tmp = tempfile.TemporaryDirectory(prefix="outbound_bench_sandbox_")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SandboxProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "outbound_pipeline.sandbox",
                "--port",
                str(self.port),
                "--latency-ms",
                str(self.latency_ms),
                "--config",
                str(bench_config_file(self._tmp.name)),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the sandbox exited with {self.process.returncode}")
            try:
                httpx.get(f"{self.base_url}/_sandbox/stats", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the sandbox did not start within 60 s") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._tmp.cleanup()

    def stats(self) -> dict[str, int]:
        return httpx.get(f"{self.base_url}/_sandbox/stats", timeout=60).json()

    def reset(self) -> None:
        httpx.post(f"{self.base_url}/_sandbox/reset", json={}, timeout=60).raise_for_status()

    def messages(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.base_url}/_sandbox/messages", timeout=120).json()

    def message_count(self) -> int:
        return len(self.messages())


# -- measuring and reporting -----------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set of this process so far: VmHWM, its own address space's high-water mark.
    Not ru_maxrss, which Linux carries over from the parent through fork and exec: every phase
    reported at least what the benchmark's own process held when it started it (725 MB after
    generating a million customers in DuckDB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # not Linux


def cpu_seconds() -> float:
    """CPU time of this process and its finished children so far (user + system): on a shared
    machine, steadier than the wall time (a server's CPU, PostgreSQL's, is not in it)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return round(total, 2)


def descendants_cpu_seconds() -> float:
    """CPU time (user + system) of this process's live descendants, read from /proc: the worker
    processes of the stages' pool are a fork server's children, so `cpu_seconds` (which counts only
    finished children) does not see them. 0 where there is no /proc."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the ")" closing the command name: state, ppid, ..., utime (14th), stime (15th).
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])
    ours, total = {os.getpid()}, 0
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in ours and pid not in ours:
                ours.add(pid)
                total += ticks[pid]
                changed = True
    return round(total / os.sysconf("SC_CLK_TCK"), 2)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def run_phase(module: str, args: Sequence[str], timeout: float = 1800) -> dict[str, Any]:
    """Run `python -m module --phase ...` in a fresh process; its last stdout line is its JSON result
    (so each phase's peak RSS is its own)."""
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout[-5000:] + completed.stderr[-10000:])
        raise RuntimeError(f"phase {' '.join(args)} failed with exit code {completed.returncode}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def step_seconds(result: Any) -> dict[str, float]:
    """Step (op) durations of a dagster execution result, in seconds."""
    out: dict[str, float] = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_SUCCESS":
            out[event.step_key] = round(event.event_specific_data.duration_ms / 1000, 3)
    return out


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            p: version(p)
            for p in (
                "dagster",
                "httpx",
                "httpx-aiohttp",
                "aiohttp",
                "sqlalchemy",
                "psycopg",
                "pandas",
            )
        },
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **data,
        "machine": machine(),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)
    return path


def print_table(
    title: str, rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None
) -> None:
    cells = [[str(c) for c in row] for row in ([header] if header else []) + list(rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.rjust(w) if k else c.ljust(w)
                for k, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if header and n == 0:
            print("  " + "  ".join("-" * w for w in widths))
