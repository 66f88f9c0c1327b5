"""A Snowflake warehouse, offline: Snowflake's SQLAlchemy dialect (`snowflake://` URLs, the driver a
brand installs) against fakesnow, which answers the Snowflake connector's calls from DuckDB. The
pipeline reads the brand's tables there and writes its own, the ledger's published copy among them;
the state stays in SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import fakesnow
import pandas as pd
import pytest
import sqlalchemy as sa
import sqlalchemy.orm.context
from snowflake.connector import pandas_tools

from outbound_pipeline.ledger import send_ledger
from outbound_pipeline.warehouse import (
    WarehouseError,
    create_engine,
    current_revision,
    deliveries,
    insert_rows,
    loader_for,
    replace_partition,
    upsert_rows,
    warehouse_schema,
)
from outbound_pipeline.warehouse.dialects.prepared import prepare
from outbound_pipeline.warehouse.dialects.snowflake import (
    COPY_FROM_ROWS,
    SnowflakeLoader,
    _copies_as_inserted,
)
from outbound_pipeline_tests.bulk import assert_no_duplicate_messages, published_columns
from outbound_pipeline_tests.conftest import DAY, materialize_campaign, resources_for
from outbound_pipeline_tests.dialect_sample import (
    PARIS,
    bound_parameters,
    bound_values,
    sample,
)
from outbound_pipeline_tests.stores import BRAND_TABLES, DemoCopies, Warehouse

KEY = "order_ready"
SNOWFLAKE_URL = "snowflake://brand:not-a-password@brand-account/brand_db/public"


def _snowflake_dialect_loads() -> None:
    """snowflake-sqlalchemy 1.x, the last that runs with the connector fakesnow needs (below 5),
    names a class SQLAlchemy 2.1 renamed; 2.x (connector 5) has the new name."""
    orm_context = sqlalchemy.orm.context
    if not hasattr(orm_context, "ORMSelectCompileState"):
        orm_context.ORMSelectCompileState = orm_context._ORMSelectCompileState  # type: ignore[attr-defined]


# Before any test loads the dialect, whichever runs first on its xdist worker.
_snowflake_dialect_loads()


def load_brand_tables(engine: sa.Engine, demo: sa.Engine) -> None:
    """The demo's brand tables, loaded as a brand's loader would: Snowflake's bulk loader
    (`write_pandas`: a stage and COPY INTO), not the pipeline."""
    raw = engine.raw_connection()
    try:
        with demo.connect() as read:
            for table in BRAND_TABLES:
                frame = pd.DataFrame(read.execute(sa.select(table)).mappings().all())
                # Looked up at the call: fakesnow.patch() replaces it in the module.
                loaded = pandas_tools.write_pandas(
                    raw.driver_connection,
                    frame,
                    table.name,
                    auto_create_table=True,
                    quote_identifiers=False,
                    use_logical_type=True,
                )
                assert loaded[0], f"{table.name} not loaded"
    finally:
        raw.close()


@pytest.fixture
def snowflake(tmp_path: Path, demo_copies: DemoCopies) -> Iterator[Warehouse]:
    """The demo's brand tables in a (fake) Snowflake database, the state store a SQLite file."""
    with fakesnow.patch():
        engine = create_engine(SNOWFLAKE_URL)
        demo = create_engine(f"sqlite:///{demo_copies.template('sqlite', 300)}")
        load_brand_tables(engine, demo)
        demo.dispose()
        state_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
        state = create_engine(state_url)
        try:
            yield Warehouse(SNOWFLAKE_URL, engine, "snowflake", state_url, state)
        finally:
            engine.dispose()
            state.dispose()


def test_a_snowflake_warehouse_is_read_and_written(
    snowflake: Warehouse, sandbox, demo_config
) -> None:
    result = materialize_campaign(demo_config, KEY, resources_for(snowflake, sandbox))
    assert result.success
    with snowflake.engine.connect() as conn:
        assert current_revision(conn, warehouse_schema) == warehouse_schema.head
    published = published_columns(snowflake.engine, deliveries, KEY, DAY)
    ledger = published_columns(snowflake.state, send_ledger, KEY, DAY)
    # The published copy is the ledger, row for row and column for column.
    assert published == ledger and ledger
    sent = [row for row in ledger if row["status"] == "sent"]
    assert sent and len(sent) == len(sandbox.messages())
    assert_no_duplicate_messages(sandbox.messages())


# -- Snowflake's bulk path: a Parquet file PUT to the table's stage, loaded by COPY INTO --------

# What a value meets on its way through Parquet and COPY INTO: quotes, separators, line breaks,
# backslashes, accents and emoji.
HOSTILE = ("O'Brien", 'say "hi"', "a,b;c\td", "line\nbreak\r\n", "back\\slash", "é ü 漢字 🎉", "")


def _load_rows(count: int, day: str = DAY, tag: str = "") -> list[dict[str, object]]:
    return [
        {
            "part": day,
            "key": f"r{i:05d}",
            "label": None if i % 11 == 0 else f"{HOSTILE[i % len(HOSTILE)]}{tag}{i}",
            "count": None if i % 13 == 0 else i * 2**40,
            "flag": None if i % 17 == 0 else i % 2 == 0,
            "ratio": None if i % 19 == 0 else i / 7,
            # A Paris time, a naive one (UTC, as SQLite hands timestamps back), or none.
            "seen_at": (
                None
                if i % 3 == 0
                else dt.datetime(
                    2026, 12, 3, 9, i % 60, 7, 123456, tzinfo=PARIS if i % 3 == 1 else None
                )
            ),
            "day": None if i % 23 == 0 else dt.date(2026, 12, 1) + dt.timedelta(days=i % 40),
        }
        for i in range(count)
    ]


def _as_stored(row: dict[str, object]) -> dict[str, object]:
    """A row as the warehouse should hold it: every timestamp the same instant, in UTC."""
    at = row["seen_at"]
    if isinstance(at, dt.datetime):
        at = (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    return {**row, "seen_at": at}


def _stored(engine: sa.Engine) -> dict[str, dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sample)).mappings().all()
    out = {}
    for row in rows:
        at = row["seen_at"]
        out[row["key"]] = {**row, "seen_at": None if at is None else at.astimezone(dt.UTC)}
    return out


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every statement sent to a Snowflake database from now on, by any engine (the pipeline's
    resources open their own), upper-cased on one line."""
    sent: list[str] = []

    def record(conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if conn.dialect.name == "snowflake":
            sent.append(" ".join(statement.split()).upper())

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


@pytest.fixture
def fake_snowflake(statements: list[str]) -> Iterator[tuple[sa.Engine, list[str]]]:
    """A (fake) Snowflake database holding the dialect tests' sample table, and every statement sent to it from now on."""
    with fakesnow.patch():
        engine = create_engine(SNOWFLAKE_URL)
        sample.create(engine)
        statements.clear()
        try:
            yield engine, statements
        finally:
            engine.dispose()


@pytest.fixture
def few_rows_copy(monkeypatch: pytest.MonkeyPatch) -> int:
    """COPY INTO from 10 rows on: the tests of what goes through INSERT instead write ten rows,
    not a thousand (fakesnow translates a thousand-row INSERT in seconds)."""
    monkeypatch.setattr(loader_for(sa.create_engine(SNOWFLAKE_URL).dialect), "copy_from_rows", 10)
    return 10


def _kinds(statements: list[str]) -> list[str]:
    """The statements' first words, of the writes only."""
    writes = ("PUT", "COPY", "INSERT", "DELETE", "MERGE", "CREATE", "REMOVE")
    return [s.split()[0] for s in statements if s.split()[0] in writes]


def test_a_large_batch_is_loaded_by_copy_into_with_every_value_intact(fake_snowflake) -> None:
    engine, statements = fake_snowflake
    rows = _load_rows(COPY_FROM_ROWS)
    with engine.begin() as conn:
        insert_rows(conn, sample, rows)
    # One file put to the table's own stage and loaded: no INSERT, and nothing created (DDL
    # would commit the caller's transaction before the load).
    assert _kinds(statements) == ["PUT", "COPY"]
    assert "@%DIALECT_SAMPLE/" in statements[-2]
    assert _stored(engine) == {r["key"]: _as_stored(r) for r in rows}
    # The loaded file is purged from the stage.
    with engine.connect() as conn:
        assert conn.exec_driver_sql("LIST @%dialect_sample").fetchall() == []


def test_a_small_batch_is_one_insert(fake_snowflake, few_rows_copy) -> None:
    engine, statements = fake_snowflake
    rows = _load_rows(few_rows_copy - 1)
    with engine.begin() as conn:
        insert_rows(conn, sample, rows)
    assert _kinds(statements) == ["INSERT"]
    assert _stored(engine) == {r["key"]: _as_stored(r) for r in rows}


def test_an_upsert_by_copy_into_replaces_the_rows_of_its_keys(fake_snowflake) -> None:
    """Snowflake does not enforce primary keys: the upsert deletes the batch's keys before the
    load, and of two rows with one key in a batch the last is kept."""
    engine, statements = fake_snowflake
    first = _load_rows(COPY_FROM_ROWS)
    with engine.begin() as conn:
        upsert_rows(conn, sample, first)
    # Half the keys again with new values, then as many new keys; the first row twice, last wins.
    again = _load_rows(2 * COPY_FROM_ROWS, tag="-again")[COPY_FROM_ROWS // 2 :]
    twice = {**again[0], "label": "the first of two"}
    with engine.begin() as conn:
        upsert_rows(conn, sample, [twice, *again])
    assert _kinds(statements)[-3:] == ["DELETE", "PUT", "COPY"]
    expected = {r["key"]: _as_stored(r) for r in [*first, *again]}
    assert _stored(engine) == expected


def test_a_replacement_rolled_back_after_its_load_leaves_the_partition_as_it_was(
    fake_snowflake,
) -> None:
    """PUT and COPY INTO stay in the caller's transaction: a partition's delete-then-insert that
    fails after the load leaves the old rows, not an empty or a half-written partition."""
    engine, statements = fake_snowflake
    old = _load_rows(COPY_FROM_ROWS)
    with engine.begin() as conn:
        insert_rows(conn, sample, old)
    day = sample.c.part == DAY
    with pytest.raises(RuntimeError, match="after the load"), engine.begin() as conn:
        replace_partition(conn, sample, day, [_load_rows(COPY_FROM_ROWS, tag="-new")])
        assert _kinds(statements)[-3:] == ["DELETE", "PUT", "COPY"]
        raise RuntimeError("a failure after the load")
    assert _stored(engine) == {r["key"]: _as_stored(r) for r in old}


def test_a_value_the_file_cannot_hold_goes_through_insert_and_its_error_hides_the_value(
    fake_snowflake, few_rows_copy
) -> None:
    """INSERT's rules are the reference: a batch with a value Arrow refuses is inserted, and
    Snowflake's refusal is a WarehouseError that shows no phone number."""
    engine, statements = fake_snowflake
    rows = _load_rows(few_rows_copy)
    rows[7]["count"] = "+33 6 12 34 56 78"
    with pytest.raises(WarehouseError) as raised, engine.begin() as conn:
        insert_rows(conn, sample, rows)
    assert _kinds(statements) == ["INSERT"]
    assert "dialect_sample" in str(raised.value) and "12 34 56" not in str(raised.value)
    assert _stored(engine) == {}


def test_a_batch_without_a_defaulted_column_goes_through_insert() -> None:
    """COPY INTO leaves a column missing from the file NULL where an INSERT applies its default
    (the ledger's copy counts attempts from 0): such a batch is not copied."""
    dialect = sa.create_engine(SNOWFLAKE_URL).dialect
    every = tuple(c.name for c in deliveries.columns)
    assert _copies_as_inserted(prepare(dialect, deliveries, every, False))
    without = tuple(name for name in every if name != "attempts")
    assert not _copies_as_inserted(prepare(dialect, deliveries, without, False))
    # A nullable column without a default may be left out: COPY leaves it NULL, as INSERT does.
    assert _copies_as_inserted(prepare(dialect, sample, ("part", "key", "label"), False))


def test_the_whole_flow_writes_every_table_by_copy_into(
    snowflake: Warehouse, statements: list[str], sandbox, demo_config, monkeypatch
) -> None:
    """The flow again, with every write of the warehouse through COPY INTO (from one row on):
    audience, messages, the published ledger, the report."""
    monkeypatch.setattr(loader_for(snowflake.engine.dialect), "copy_from_rows", 1)
    result = materialize_campaign(demo_config, KEY, resources_for(snowflake, sandbox))
    assert result.success
    copied = {s.split()[2].lower() for s in statements if s.startswith("COPY INTO")}
    inserted = {s.split()[2].lower() for s in statements if s.startswith("INSERT INTO")}
    assert {"outbound_audience", "outbound_messages", "outbound_deliveries"} <= copied
    # No table of the pipeline's written by INSERT, but the schema's version (Alembic's own).
    assert {name for name in inserted if name.startswith("outbound_")} <= {
        "outbound_warehouse_version"
    }
    published = published_columns(snowflake.engine, deliveries, KEY, DAY)
    ledger = published_columns(snowflake.state, send_ledger, KEY, DAY)
    assert published == ledger and ledger
    assert len([r for r in ledger if r["status"] == "sent"]) == len(sandbox.messages())
    assert_no_duplicate_messages(sandbox.messages())


@pytest.mark.parametrize(("key_length", "lists"), [(6, [16_000, 4_000]), (40, [11_915, 8_085])])
def test_an_upserts_key_lists_stay_within_16000_keys_and_half_a_megabyte(
    key_length: int, lists: list[int]
) -> None:
    """An upsert's DELETEs, as Snowflake's dialect compiles them: 16,000 keys a statement
    (Snowflake takes 16,384 in an IN list), fewer when they are long, as the connector writes
    them into the statement's text (40 bytes, two quotes, a comma and a space: 11,915 in 512 KiB)."""
    dialect = sa.create_engine(SNOWFLAKE_URL).dialect
    rows = _load_rows(20_000)
    for i, one in enumerate(rows):
        one["key"] = f"{i:0{key_length}d}"
    prepared = prepare(dialect, sample, tuple(rows[0]), False)
    values = [list(one.values()) for one in rows]
    deletes = [bound_parameters(d, dialect) for d in SnowflakeLoader().deletes(prepared, values)]
    keys = [bound_values(p, "key") for p in deletes]
    assert [len(k) for k in keys] == lists
    assert max(sum(len(k) + 4 for k in chunk) for chunk in keys) <= 512 * 1024
    assert sorted(k for chunk in keys for k in chunk) == sorted(one["key"] for one in rows)
