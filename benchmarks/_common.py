"""Shared pieces of the benchmarks: the sandbox in its own process, scratch databases, a generator of
brand tables (customers + whatsapp_consents, the contract's columns), the campaign configuration the
benchmarks run, result files and tables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import random
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
from outbound_pipeline.ledger import create_state_tables
from outbound_pipeline.warehouse import (
    PostgresUnreachable,
    create_engine,
    create_warehouse_tables,
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
FIRST_NAMES = (
    "Zoé",
    "Élodie",
    "Chloé",
    "Léa",
    "Jérôme",
    "François",
    "Loïc",
    "Anaïs",
    "Camille",
    "Lucas",
    "Hugo",
    "N'Golo",
)
STORES = (
    "Lyon Part-Dieu",
    "Paris Rivoli",
    "Marseille Prado",
    "Lille Euralille",
    "Nice Étoile",
    "Grenoble Grand'Place",
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


# -- brand tables ----------------------------------------------------------------------------

brand_metadata = sa.MetaData()
customers = sa.Table(
    "customers",
    brand_metadata,
    sa.Column("customer_id", sa.String(16), primary_key=True),
    sa.Column("phone", sa.String(40)),
    sa.Column("first_name", sa.String(80)),
    sa.Column("last_name", sa.String(80)),
    sa.Column("country", sa.String(2)),
    sa.Column("preferred_store", sa.String(80)),
)
consents = sa.Table(
    "whatsapp_consents",
    brand_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.String(16), nullable=False),
    sa.Column("category", sa.String(40), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_bench_consents_customer_category", "customer_id", "category", "updated_at"),
)
_MALFORMED = (
    "12345",
    "06 12",
    "+33 6 AB CD EF GH",
    "  ",
    "0033",
    "+999123456789",
    "06-00-00-00-00-00-00",
)


def _customer_rows(count: int, seed: int, messy: bool) -> Iterator[tuple[Any, ...]]:
    """(customer_id, phone, first_name, last_name, country, store): unique valid French mobiles when
    clean; when messy about 80 % E.164, 10 % national format, 4 % Belgian, 3 % malformed, 1 %
    missing and 2 % a phone shared with an earlier customer (the mix a real base has)."""
    rng = random.Random(seed)
    for i in range(count):
        mobile = f"+3361{i:07d}" if i < 10_000_000 else f"+3375{i % 10_000_000:07d}"
        country: str | None = "FR"
        phone: str | None = mobile
        if messy:
            r = rng.random()
            if r < 0.80:
                pass
            elif r < 0.90:
                digits = "0" + mobile[3:]
                phone = " ".join(digits[k : k + 2] for k in range(0, 10, 2))
            elif r < 0.94:
                phone, country = f"+3247{i % 10_000_000:07d}", "BE"
            elif r < 0.97:
                phone = rng.choice(_MALFORMED)
            elif r < 0.98:
                phone, country = None, None
            elif i > 0:
                phone = f"+3361{rng.randrange(i):07d}"
        yield (
            f"C{i:08d}",
            phone,
            FIRST_NAMES[i % len(FIRST_NAMES)],
            "Martin",
            country,
            STORES[(i // 7) % len(STORES)],
        )


def _consent_rows(count: int, seed: int, messy: bool) -> Iterator[tuple[Any, ...]]:
    """(id, customer_id, category, status, updated_at): one current row per customer (opted in when
    clean); when messy 88 % opted in, 6 % opted out, 6 % none, and a quarter with an older row of the
    other status (the latest row wins)."""
    rng = random.Random(seed + 1)
    base = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    next_id = 1
    for i in range(count):
        customer_id = f"C{i:08d}"
        when = base + dt.timedelta(minutes=i % 500_000)
        if not messy:
            yield (next_id, customer_id, CONSENT_CATEGORY, "opted_in", when)
            next_id += 1
            continue
        r = rng.random()
        if r < 0.06:
            continue
        status = "opted_in" if r < 0.94 else "opted_out"
        if rng.random() < 0.25:
            older = "opted_out" if status == "opted_in" else "opted_in"
            yield (next_id, customer_id, CONSENT_CATEGORY, older, when - dt.timedelta(days=30))
            next_id += 1
        yield (next_id, customer_id, CONSENT_CATEGORY, status, when)
        next_id += 1


def generate_brand_tables(
    engine: sa.Engine, count: int, *, seed: int = 7, messy: bool = False
) -> dict[str, Any]:
    """Create and fill `customers` and `whatsapp_consents` (bulk: COPY on PostgreSQL, executemany on
    SQLite, the dialect layer's NumPy columns on DuckDB), plus the pipeline's own tables (and the
    state store's, in the same database, unless the warehouse is DuckDB). Returns row counts and
    seconds."""
    started = time.perf_counter()
    brand_metadata.drop_all(engine)
    brand_metadata.create_all(engine)
    create_warehouse_tables(engine)
    if engine.dialect.name == "duckdb":
        counts = _generate_with_loader(engine, count, seed, messy)
        return {**counts, "seconds": round(time.perf_counter() - started, 2)}
    create_state_tables(engine)  # the state store is the same database
    counts = {"customers": 0, "whatsapp_consents": 0}
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cur.copy(  # type: ignore[attr-defined]
                "COPY customers (customer_id, phone, first_name, last_name, country, preferred_store) FROM STDIN"
            ) as copy:
                for row in _customer_rows(count, seed, messy):
                    copy.write_row(row)
                    counts["customers"] += 1
            with cur.copy(  # type: ignore[attr-defined]
                "COPY whatsapp_consents (id, customer_id, category, status, updated_at) FROM STDIN"
            ) as copy:
                for row in _consent_rows(count, seed, messy):
                    copy.write_row(row)
                    counts["whatsapp_consents"] += 1
            cur.execute("ANALYZE customers")
            cur.execute("ANALYZE whatsapp_consents")
        else:
            cur.execute("BEGIN")
            batch: list[tuple[Any, ...]] = []
            for table, rows, sql in (
                (
                    "customers",
                    _customer_rows(count, seed, messy),
                    "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)",
                ),
                (
                    "whatsapp_consents",
                    _consent_rows(count, seed, messy),
                    "INSERT INTO whatsapp_consents VALUES (?, ?, ?, ?, ?)",
                ),
            ):
                for row in rows:
                    if table == "whatsapp_consents":
                        # The text SQLAlchemy's DateTime writes on SQLite.
                        row = (*row[:4], row[4].strftime("%Y-%m-%d %H:%M:%S.%f"))
                    batch.append(row)
                    if len(batch) >= 50_000:
                        cur.executemany(sql, batch)
                        counts[table] += len(batch)
                        batch.clear()
                cur.executemany(sql, batch)
                counts[table] += len(batch)
                batch.clear()
            cur.execute("COMMIT")
            cur.execute("ANALYZE")
        cur.close()
        raw.commit()
    finally:
        raw.close()
    return {**counts, "seconds": round(time.perf_counter() - started, 2)}


def _generate_with_loader(engine: sa.Engine, count: int, seed: int, messy: bool) -> dict[str, int]:
    from outbound_pipeline.warehouse import insert_rows  # the dialect layer (not in older code)

    counts = {}
    with engine.begin() as conn:
        for table, rows in (
            (brand_metadata.tables["customers"], _customer_rows(count, seed, messy)),
            (brand_metadata.tables["whatsapp_consents"], _consent_rows(count, seed, messy)),
        ):
            columns = [c.name for c in table.columns]
            counts[table.name] = 0
            while batch := list(itertools.islice(rows, 50_000)):
                insert_rows(conn, table, batch, columns)
                counts[table.name] += len(batch)
    return counts


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
    """Peak resident set of this process so far (ru_maxrss is in KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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


class StatementTimer:
    """Time every SQL statement of every engine of this process, grouped by statement text
    (`--sql-profile`): where the database time of a phase goes."""

    def __init__(self) -> None:
        self.totals: dict[str, list[float]] = {}

    def __enter__(self) -> StatementTimer:
        sa.event.listen(sa.Engine, "before_cursor_execute", self._before)
        sa.event.listen(sa.Engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(sa.Engine, "before_cursor_execute", self._before)
        sa.event.remove(sa.Engine, "after_cursor_execute", self._after)

    def _before(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def _after(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        started = conn.info["bench_started"].pop()
        key = " ".join(statement.split())[:160]
        entry = self.totals.setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - started

    def top(self, n: int = 12) -> list[dict[str, Any]]:
        ranked = sorted(self.totals.items(), key=lambda kv: -kv[1][1])[:n]
        return [
            {"seconds": round(t, 3), "executions": int(c), "statement": s} for s, (c, t) in ranked
        ]
