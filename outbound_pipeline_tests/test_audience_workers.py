"""The audience's verdicts on a pool of worker processes give the rows and counts that one process
gives: same verdicts, same row numbers, same order of the query."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from outbound_pipeline.audience import extract
from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.warehouse import audience
from outbound_pipeline_tests.conftest import Warehouse

DAY = "2026-11-25"


def _stored(warehouse: Warehouse) -> list[dict[str, object]]:
    a = audience.c
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.select(audience).where(a.partition_date == DAY).order_by(a.row_number)
        ).mappings()
        return [{k: v for k, v in row.items() if k != "run_id"} for row in rows]


# SQLite only: the pool's work is the same whatever the warehouse, and its start is not free.
@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
def test_a_pool_of_processes_gives_what_one_process_gives(
    small: Warehouse, demo_config: OutboundConfig
) -> None:
    campaign = demo_config.campaign("order_ready")
    alone = extract(small.engine, campaign, demo_config, DAY, "alone", parallel_from=10**9)
    expected = _stored(small)
    # Chunks of 5 rows, the pool from the second chunk on: some chunks here, most in workers.
    pooled = extract(
        small.engine, campaign, demo_config, DAY, "pooled", chunk_rows=5, parallel_from=5
    )
    assert _stored(small) == expected
    assert (pooled.rows, pooled.eligible, pooled.reasons) == (
        alone.rows,
        alone.eligible,
        alone.reasons,
    )
    assert alone.rows > 20 and 0 < alone.eligible < alone.rows
