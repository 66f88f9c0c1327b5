"""A Snowflake warehouse, offline: Snowflake's SQLAlchemy dialect (`snowflake://` URLs, the driver a
brand installs) against fakesnow, which answers the Snowflake connector's calls from DuckDB. The
pipeline reads the brand's tables there and writes its own, the ledger's published copy among them;
the state stays in SQLite."""

from __future__ import annotations

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
    create_engine,
    current_revision,
    deliveries,
    warehouse_schema,
)
from outbound_pipeline_tests.bulk import assert_no_duplicate_messages, published_columns
from outbound_pipeline_tests.conftest import DAY, materialize_campaign, resources_for
from outbound_pipeline_tests.stores import BRAND_TABLES, DemoCopies, Warehouse

KEY = "order_ready"
SNOWFLAKE_URL = "snowflake://brand:not-a-password@brand-account/brand_db/public"


def _snowflake_dialect_loads() -> None:
    """snowflake-sqlalchemy 1.x, the last that runs with the connector fakesnow needs (below 5),
    names a class SQLAlchemy 2.1 renamed; 2.x (connector 5) has the new name."""
    orm_context = sqlalchemy.orm.context
    if not hasattr(orm_context, "ORMSelectCompileState"):
        orm_context.ORMSelectCompileState = orm_context._ORMSelectCompileState  # type: ignore[attr-defined]


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
    _snowflake_dialect_loads()
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
