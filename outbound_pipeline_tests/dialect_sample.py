"""The table the dialect layer's tests write on every engine (test_dialects, test_dialect_limits,
test_snowflake): a column of each type the pipeline's own tables use, keyed like them by a
partition and a key; the engines it is written on (SQLite, PostgreSQL, DuckDB), a row of it, and
what a table holds."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from outbound_pipeline.warehouse import create_engine
from outbound_pipeline_tests.stores import postgres_server_url, scratch_postgres_database

PARIS = dt.timezone(dt.timedelta(hours=2))
meta = sa.MetaData()
sample = sa.Table(
    "dialect_sample",
    meta,
    sa.Column("part", sa.String(10), nullable=False),
    sa.Column("key", sa.String(40), nullable=False),
    sa.Column("label", sa.Text),
    sa.Column("count", sa.Integer),
    sa.Column("ratio", sa.Float),
    sa.Column("flag", sa.Boolean),
    sa.Column("day", sa.Date),
    sa.Column("seen_at", sa.DateTime(timezone=True)),
    sa.PrimaryKeyConstraint("part", "key"),
)


# The engines a module's `engine` fixture runs its tests on, and what each is made of: a module
# declares `engine = pytest.fixture(scope="module", params=ENGINES)(sample_engine)` and
# `empty = pytest.fixture(...)(emptied)`, autouse where every test writes the table (its own
# fixtures, not imported ones, which ruff would see redefined by each test's arguments).
ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "duckdb"]


def sample_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sa.Engine]:
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            url = stack.enter_context(scratch_postgres_database(postgres_server_url()))  # type: ignore[arg-type]
        else:
            path = Path(tmp_path_factory.mktemp("dialects")) / f"w.{request.param}"
            url = f"{request.param}:///{path}"
        engine = create_engine(url)
        stack.callback(engine.dispose)
        meta.create_all(engine)
        yield engine


def emptied(engine: sa.Engine) -> None:
    """The sample table without rows, before each test."""
    with engine.begin() as conn:
        conn.execute(sa.delete(sample))


def row(key: str, part: str = "2026-11-25", **values: Any) -> dict[str, Any]:
    base = {
        "part": part,
        "key": key,
        "label": "Zoé 🎉 «ünïcødé» 日本",
        "count": 42,
        "ratio": 0.25,
        "flag": True,
        "day": dt.date(2026, 11, 25),
        "seen_at": dt.datetime(2026, 11, 25, 9, 30, 15, 123456, tzinfo=dt.UTC),
    }
    return {**base, **values}


def stored(engine: sa.Engine) -> dict[tuple[str, str], dict[str, Any]]:
    with engine.connect() as conn:
        out = {}
        for r in conn.execute(sa.select(sample)).mappings():
            record = dict(r)
            # SQLite hands timestamps back naive (UTC); DuckDB in the session's time zone.
            at = record["seen_at"]
            if at is not None:
                record["seen_at"] = (
                    at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
                )
            out[(record["part"], record["key"])] = record
        return out


def bound_parameters(statement: sa.ClauseElement, dialect: sa.Dialect) -> dict[str, Any]:
    """The parameters the statement binds once its IN lists are expanded, as the driver gets them."""
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    return dict(compiled.params)


def bound_values(parameters: dict[str, Any], column: str) -> list[Any]:
    """The values bound for `column`: a multi-row INSERT's `column_m<row>`, an IN list's
    `column_1_<n>` or its one array `column_1`."""
    out: list[Any] = []
    for name, value in parameters.items():
        if re.fullmatch(rf"{column}_(m\d+|\d+(_\d+)?)", name):
            out.extend(value if isinstance(value, list) else [value])
    return out
