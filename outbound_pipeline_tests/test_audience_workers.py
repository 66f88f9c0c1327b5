"""The stages' work on a pool of worker processes gives the rows and counts that one process gives:
the audience's verdicts (same row numbers, same order of the query) and the messages' rendering."""

from __future__ import annotations

import datetime as dt
import functools
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
import sqlalchemy as sa

from outbound_pipeline import workers
from outbound_pipeline.audience import extract
from outbound_pipeline.audience.extraction import ROW_COLUMNS as AUDIENCE_COLUMNS
from outbound_pipeline.audience.extraction import (
    AudienceSummary,
    _verdict_chunk,
    apply_suppressions,
)
from outbound_pipeline.audience.query import (
    CONSENT_EXTRA_PREFIX,
    CONSENT_STATUS,
    CONSENT_UPDATED_AT,
    OCCURRENCE,
)
from outbound_pipeline.config import OutboundConfig
from outbound_pipeline.messages import render
from outbound_pipeline.messages.rendering import ROW_COLUMNS as MESSAGES_COLUMNS
from outbound_pipeline.messages.rendering import campaign_arms
from outbound_pipeline.unsubscribe import link_maker
from outbound_pipeline.warehouse import StageWrites, audience, messages
from outbound_pipeline.warehouse.dialects import rows as rows_module
from outbound_pipeline.warehouse.dialects.arrow import BatchPacker, as_is, as_rows, rows_of
from outbound_pipeline.warehouse.dialects.duckdb import DuckDBLoader
from outbound_pipeline.workers import (
    CHUNKS_AHEAD,
    WORKER_NICENESS,
    in_order,
    shared_pool,
    worker_count,
)
from outbound_pipeline_tests.stores import Warehouse

DAY = "2026-11-25"


@pytest.fixture
def pool_started() -> None:
    """The process's pool ready before the test: a stage does its chunks itself while the pool
    starts, and these small days would be done before it is."""
    if worker_count() > 1:
        shared_pool(worker_count())


def _stored(warehouse: Warehouse) -> list[dict[str, object]]:
    a = audience.c
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.select(audience).where(a.partition_date == DAY).order_by(a.row_number)
        ).mappings()
        return [{k: v for k, v in row.items() if k != "run_id"} for row in rows]


# SQLite only: the pool's work is the same whatever the warehouse, and its start is not free.
@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("pool_started")
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


def _stored_messages(warehouse: Warehouse, campaign_key: str) -> list[dict[str, object]]:
    m = messages.c
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.select(messages)
            .where(m.campaign_key == campaign_key, m.partition_date == DAY)
            .order_by(m.row_key)
        ).mappings()
        return [{k: v for k, v in row.items() if k != "run_id"} for row in rows]


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
@pytest.mark.parametrize("campaign_key", ["order_ready", "winter_offers"])
@pytest.mark.usefixtures("pool_started")
def test_messages_rendered_on_a_pool_of_processes_are_those_of_one_process(
    small: Warehouse, demo_config: OutboundConfig, campaign_key: str
) -> None:
    # winter_offers: two variants with their own templates, a holdout.
    campaign = demo_config.campaign(campaign_key)
    extract(small.engine, campaign, demo_config, DAY, "audience")
    alone = render(small.engine, campaign, demo_config, DAY, "alone", parallel_from=10**9)
    expected = _stored_messages(small, campaign_key)
    pooled = render(
        small.engine, campaign, demo_config, DAY, "pooled", chunk_rows=5, parallel_from=5
    )
    assert _stored_messages(small, campaign_key) == expected
    assert (pooled.rows, pooled.rendered, pooled.reasons, pooled.sample_preview) == (
        alone.rows,
        alone.rendered,
        alone.reasons,
        alone.sample_preview,
    )
    assert alone.rendered > 10


def _some_suppressed(phones: Sequence[str]) -> set[str]:
    """A suppression list holding every phone that ends in 3 or 7."""
    return {phone for phone in phones if phone[-1] in "37"}


@pytest.mark.parametrize("warehouse", ["duckdb+sqlite"], indirect=True)
@pytest.mark.parametrize("campaign_key", ["order_ready", "winter_offers"])
@pytest.mark.usefixtures("pool_started")
def test_duckdbs_arrow_batches_write_what_its_cursor_and_python_rows_write(
    small: Warehouse,
    demo_config: OutboundConfig,
    campaign_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On DuckDB the stages read Arrow record batches, their workers make tuples of them and pack
    their rows as batches again: the audience (suppressions applied to a batch too) and the
    messages stored are those of the cursor's tuples and Python rows, value for value."""
    campaign = demo_config.campaign(campaign_key)
    taken: list[bool] = []
    read_by_arrow = rows_module.arrow_query

    def spied(*args: Any) -> Any:
        found = read_by_arrow(*args)
        taken.append(found is not None)
        return found

    with monkeypatch.context() as without_arrow:
        without_arrow.setattr(rows_module, "arrow_query", lambda *args: None)
        without_arrow.setattr(DuckDBLoader, "scans_arrow", False)
        by_rows = extract(
            small.engine, campaign, demo_config, DAY, "rows", suppressed=_some_suppressed
        )
        render(small.engine, campaign, demo_config, DAY, "rows")
        expected = _stored(small), _stored_messages(small, campaign_key)
    monkeypatch.setattr(rows_module, "arrow_query", spied)
    added: list[str] = []
    add = StageWrites.add

    def spied_add(writes: StageWrites, rows: Any) -> None:
        added.append(type(rows).__name__)
        add(writes, rows)

    monkeypatch.setattr(StageWrites, "add", spied_add)
    by_arrow = extract(
        small.engine,
        campaign,
        demo_config,
        DAY,
        "arrow",
        chunk_rows=7,
        parallel_from=7,
        suppressed=_some_suppressed,
    )
    render(small.engine, campaign, demo_config, DAY, "arrow", chunk_rows=7, parallel_from=7)
    assert taken == [True, True]  # both stages read record batches
    assert set(added) == {"RecordBatch"}  # and wrote the batches their workers packed
    assert (_stored(small), _stored_messages(small, campaign_key)) == expected
    assert (by_arrow.rows, by_arrow.eligible, by_arrow.reasons) == (
        by_rows.rows,
        by_rows.eligible,
        by_rows.reasons,
    )
    assert by_rows.reasons["unsubscribed"] > 0 and by_rows.eligible > 5
    unsubscribed = [r for r in expected[0] if r["reason"] == "unsubscribed"]
    assert len(unsubscribed) == by_rows.reasons["unsubscribed"]
    assert all(r["recipient"][-1] in "37" and not r["eligible"] for r in unsubscribed)
    assert not [r for r in expected[0] if r["eligible"] and r["recipient"][-1] in "37"]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_a_chunk_as_a_record_batch_gives_the_rows_its_tuples_give(
    demo_config: OutboundConfig, zone: str
) -> None:
    # DuckDB's chunks come as record batches, whose consent times Arrow writes as text (a zone
    # of offset zero) or Python does (another): the same rows and counts as the chunk's tuples.
    campaign = demo_config.campaign("order_ready")
    template = demo_config.template_for(campaign)
    extras = ("source",)
    names = [
        campaign.customer_id_column,
        campaign.phone_column,
        *campaign.variable_columns(),
        CONSENT_STATUS,
        CONSENT_UPDATED_AT,
        CONSENT_EXTRA_PREFIX + "source",
        OCCURRENCE,
    ]
    at = dt.datetime(2026, 12, 1, 10, 0, 0, 123_456, tzinfo=dt.UTC)
    rows = [
        (
            "c1",
            "+33612345678",
            *("x" for _ in campaign.variable_columns()),
            "opted_in",
            at,
            "web",
            1,
        ),
        ("c2", "06 12 34 56 79", *(None for _ in campaign.variable_columns()), None, None, None, 1),
        (
            "c3",
            "bad",
            *("y" for _ in campaign.variable_columns()),
            "opted_out",
            dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
            "shop",
            2,
        ),
    ]
    types = {CONSENT_UPDATED_AT: pa.timestamp("us", tz=zone), OCCURRENCE: pa.int64()}
    batch = pa.record_batch(
        [
            pa.array(values, type=types.get(name, pa.string()))
            for name, values in zip(names, zip(*rows, strict=True), strict=True)
        ],
        names=names,
    )
    work = functools.partial(
        _verdict_chunk, campaign, template, DAY, "run", extras, names, as_rows, True
    )
    from_batch, from_rows = work(batch, 7), work(rows_of(batch), 7)
    assert from_batch == from_rows
    written = dict(zip(AUDIENCE_COLUMNS, zip(*from_batch[0], strict=True), strict=True))
    assert written["row_number"] == (7, 8, 9)
    assert written["consent_updated_at"][1] is None
    assert written["consent_updated_at"][0] == at.astimezone(ZoneInfo(zone)).isoformat()
    assert written["consent_record_json"] == ('{"source":"web"}', None, '{"source":"shop"}')
    assert from_batch[1].rows == 3 and from_batch[1].eligible == 1


@pytest.mark.parametrize("packed", [False, True], ids=["lists", "batch"])
def test_a_listed_phone_makes_its_eligible_and_held_out_rows_unsubscribed_and_no_other(
    packed: bool,
) -> None:
    """The suppression list, applied to a chunk's rows as a stage's worker packs them (its
    columns as lists of rows, or as a record batch: StageWrites.pack_columns): a phone on it
    makes its eligible and held-out rows unsubscribed (no variant), leaves a row kept out for
    another reason as it was, and the counts follow."""
    packer = BatchPacker.of(audience, AUDIENCE_COLUMNS)
    assert packer is not None
    pack, pack_columns = (packer, packer.columns) if packed else (as_is, as_rows)

    def row(n: int, phone: str, reason: str | None) -> list[Any]:
        values = dict.fromkeys(AUDIENCE_COLUMNS)
        values.update(
            campaign_key="c",
            partition_date=DAY,
            row_key=f"k{n}",
            row_number=n,
            recipient=phone,
            eligible=reason is None,
            reason=reason,
            variant="A" if reason is None else None,
        )
        return [values[name] for name in AUDIENCE_COLUMNS]

    listed, other = "+33612345678", "+33687654321"
    rows = [
        row(0, listed, None),
        row(1, listed, "holdout"),
        row(2, listed, "opted_out"),
        row(3, other, None),
    ]
    summary = AudienceSummary(
        rows=4, eligible=2, reasons=Counter({"eligible": 2, "holdout": 1, "opted_out": 1})
    )
    asked: list[list[str]] = []

    def suppressed(phones: Sequence[str]) -> set[str]:
        asked.append(list(phones))
        return {listed} & set(phones)

    columns = [list(values) for values in zip(*rows, strict=True)]
    result = rows_of(apply_suppressions(pack_columns(columns), summary, suppressed, pack))
    at = {name: i for i, name in enumerate(AUDIENCE_COLUMNS)}
    got = [(r[at["reason"]], r[at["eligible"]], r[at["variant"]]) for r in result]
    assert got == [
        ("unsubscribed", False, None),
        ("unsubscribed", False, None),
        ("opted_out", False, None),
        (None, True, "A"),
    ]
    assert asked == [[listed, listed, other]]  # the rows kept out for another reason not asked
    assert summary.eligible == 1
    assert summary.reasons == Counter(
        {"eligible": 1, "holdout": 0, "opted_out": 1, "unsubscribed": 2}
    )


@pytest.mark.parametrize("warehouse", ["sqlite"], indirect=True)
@pytest.mark.parametrize("campaign_key", ["order_ready", "winter_offers"])
def test_each_value_a_stage_writes_is_stored_under_its_own_column(
    small: Warehouse, demo_config: OutboundConfig, campaign_key: str
) -> None:
    # The stages build each row as a list in the order of their ROW_COLUMNS: a value out of place
    # would land in another column.
    assert sorted(AUDIENCE_COLUMNS) == sorted(audience.c.keys())
    assert sorted(MESSAGES_COLUMNS) == sorted(messages.c.keys())
    # winter_offers: two variants with their own templates, a holdout.
    campaign = demo_config.campaign(campaign_key)
    arms = campaign_arms(campaign, demo_config)
    extract(small.engine, campaign, demo_config, DAY, "audience-run")
    render(small.engine, campaign, demo_config, DAY, "messages-run")
    stored = _stored(small)
    with small.engine.connect() as conn:
        run_ids = set(conn.execute(sa.select(audience.c.run_id)).scalars())
    assert run_ids == {"audience-run"}
    assert [row["row_number"] for row in stored] == list(range(len(stored)))
    for row in stored:
        assert (row["campaign_key"], row["partition_date"]) == (campaign_key, DAY)
        assert row["consent_category"] == campaign.consent_category
        assert len(str(row["row_key"])) == 32 and row["customer_id"]
        assert row["eligible"] is (row["reason"] is None)
        assert row["recipient"] is None or str(row["recipient"]).startswith("+")
        assert row["recipient"] is None or row["phone_raw"] is not None
        assert row["phone_region"] is None or str(row["phone_region"]).isupper()
        assert row["consent_status"] in ("opted_in", "opted_out", "none")
        assert row["consent_updated_at"] is None or str(row["consent_updated_at"])[:2] == "20"
        assert row["consent_record_json"] is None or set(
            json.loads(str(row["consent_record_json"]))
        ) == set(demo_config.consent_columns)
        assert row["variant"] in (arms if row["eligible"] else {None})
        assert set(json.loads(str(row["fields_json"]))) == set(campaign.variable_columns())
    sent_to = {row["row_key"]: row for row in stored if row["eligible"]}
    assert any(row["consent_record_json"] for row in stored)
    written = _stored_messages(small, campaign_key)
    assert written and {row["row_key"] for row in written} == set(sent_to)
    for row in written:
        audience_row = sent_to[row["row_key"]]
        assert (row["customer_id"], row["recipient"]) == (
            audience_row["customer_id"],
            audience_row["recipient"],
        )
        arm, template = arms[audience_row["variant"]]
        assert (row["template_name"], row["language"], row["category"], row["variant"]) == (
            template.name,
            template.language,
            template.category,
            arm.variant,
        )
        assert row["rendered"] is (row["reason"] is None)
        if row["rendered"]:
            header = json.loads(str(row["header_params_json"]))
            body = json.loads(str(row["body_params_json"]))
            assert (len(header), len(body)) == (template.header_count, template.body_count)
            assert all(value in str(row["preview_text"]) for value in header + body)


def test_unsubscribe_links_reach_the_worker_processes_intact() -> None:
    # Rendering's workers get the link maker pickled: it must make the same links there.
    make = link_maker("s" * 40, "https://acme.example/unsubscribe")
    again = pickle.loads(pickle.dumps(make))
    assert again("+33612345678", "link") == make("+33612345678", "link")
    assert again("+33612345678", "token") == make("+33612345678", "token")
    assert make("+33612345678", "link").startswith("https://acme.example/unsubscribe")


def _chunk_start(chunk: list[int], start: int) -> int:
    return start


def _niceness(chunk: Sequence[Any], start: int) -> int:
    return os.nice(0)


@pytest.mark.skipif(worker_count() < 2, reason="one core: the stages never use a pool")
@pytest.mark.usefixtures("pool_started")
def test_the_workers_yield_the_cores_to_the_stage_process() -> None:
    # The stage process reads and writes every row: its work comes first.
    chunks = [[(i,)] for i in range(2 * worker_count())]
    found = set(in_order(_niceness, chunks, parallel_from=0))
    assert found == {min(os.nice(0) + WORKER_NICENESS, 19)}


@pytest.mark.skipif(worker_count() < 2, reason="one core: the stages never use a pool")
@pytest.mark.usefixtures("pool_started")
def test_the_pool_works_ahead_of_the_caller_by_a_bounded_number_of_chunks() -> None:
    # The workers go on while the caller writes (so they need chunks waiting), and memory stays
    # bounded: never more than CHUNKS_AHEAD chunks per worker read ahead of the caller.
    read: list[int] = []

    def chunks() -> Iterator[list[int]]:
        for number in range(100):
            read.append(number)
            yield [number]

    ahead = []
    for done, start in enumerate(in_order(_chunk_start, chunks(), parallel_from=0)):
        assert start == done  # in order
        ahead.append(len(read) - done - 1)
    assert max(ahead) == worker_count() * CHUNKS_AHEAD


class _RefusedPool:
    """A pool whose processes cannot start (a fork refused, say)."""

    tried = threading.Event()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _RefusedPool.tried.set()
        raise OSError("no more processes")


def _chunk_start_and_process(chunk: list[int], start: int) -> tuple[int, int]:
    return start, os.getpid()


def test_a_pool_that_cannot_start_leaves_the_chunks_to_the_stage_and_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workers, "_pool", None)
    monkeypatch.setattr(workers, "_starting", None)
    monkeypatch.setattr(workers, "worker_count", lambda: 2)
    monkeypatch.setattr(workers, "ProcessPoolExecutor", _RefusedPool)

    def chunks() -> Iterator[list[int]]:
        for number in range(20):
            if number == 1:  # the start has failed by the second chunk
                assert _RefusedPool.tried.wait(timeout=30)
                time.sleep(0.1)
            yield [number]

    for attempt in range(2):  # a stage, then the next, which tries the pool again
        _RefusedPool.tried.clear()
        done = list(in_order(_chunk_start_and_process, chunks(), parallel_from=0))
        assert done == [(start, os.getpid()) for start in range(20)]  # all of them, here, in order
        assert _RefusedPool.tried.is_set()
        assert caplog.text.count("could not start: no more processes") == attempt + 1


@pytest.mark.skipif(
    worker_count() < 2 or "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="one core or no fork server: no pool, or no preloading",
)
def test_the_main_modules_imports_are_done_once_by_the_fork_server_not_by_each_worker() -> None:
    # A program started as `python -m module word`: each worker runs that module again; what it
    # imports was imported before the workers were forked, not once per worker. Its import fails
    # in the fork server (no command line to read the word from): the pool works all the same.
    # And the program does not wait for the pool to start: it does the chunks itself meanwhile.
    done = subprocess.run(
        [sys.executable, "-m", "outbound_pipeline_tests.preload_main", "hello"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    printed = json.loads(done.stdout.splitlines()[-1])
    chunks, program = printed["chunks"], printed["pid"]
    assert [start for *_, start in chunks] == list(range(len(chunks)))  # in order
    workers_of = [worker for _, worker, _, _ in chunks]
    # Chunks read 100 a second: the fork server's imports (Dagster's, a second or more) took some
    # of them here, then the pool had them all.
    first_on_pool = next(i for i, worker in enumerate(workers_of) if worker != program)
    assert first_on_pool >= 10 and program not in workers_of[first_on_pool:]
    on_pool = chunks[first_on_pool:]
    assert len(on_pool) == 4
    importers = {importer for importer, _, _, _ in on_pool}
    workers = {worker for _, worker, _, _ in on_pool}
    assert len(importers) == 1 and not importers & workers and program not in importers
    assert {word for _, _, word, _ in on_pool} == {"hello"}
