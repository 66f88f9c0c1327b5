"""The stages' CPU a row in the worker processes' code: the audience's verdicts and the messages'
rendering of the benchmark's rows, chunk by chunk, measured in this process's CPU time.

    python -m benchmarks.stage_cpu [--rows 100000] [--compare REF] [--rounds 3]

A fresh SQLite warehouse gets `--rows` customers (`benchmarks.brand_tables`, the messy mix of
`audience_scale`); the audience query's rows are read once, then each chunk goes through
`_verdict_chunk`, and the eligible rows it gives through `_render_chunk`, `--rounds` times.

With `--compare REF` (a git commit, branch or tag), the two stage modules as they were at REF
(`audience/extraction.py`, `messages/rendering.py`, with the rest of this tree) run the same
chunks, the two versions alternating chunk by chunk, the first of each pair changing every
chunk. A machine whose speed wanders from one minute to the next (shared cores) slows both alike,
where two runs one after the other can differ by a quarter. Whether the two gave the same rows is
reported too. But the comparison is biased: the same code compared with itself measured 1.0-1.4 us
a row slower on the audience when listed first (REF) than second (2026-12-05, cause not found).
Compare versions by running this in each one's tree (a git worktree), alternately, several times.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import inspect
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks._common import (
    CAMPAIGN_KEY,
    DAY,
    ROOT,
    bench_config,
    print_table,
    scratch_database,
    write_results,
)
from benchmarks.brand_tables import generate_brand_tables

MODULES = {
    "extraction": "outbound_pipeline/audience/extraction.py",
    "rendering": "outbound_pipeline/messages/rendering.py",
}
CHUNK_ROWS = 5000
# A stage's chunk work: (the query's column names, for the audience's,) rows, first row number.
Work = Callable[..., tuple[list[list[Any]], Any]]


def module_at(ref: str, name: str, directory: Path) -> ModuleType:
    """The stage module `name` as it was at git `ref`, imported under a name of its own."""
    source = subprocess.run(
        ["git", "show", f"{ref}:{MODULES[name]}"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = directory / f"{name}_at_ref.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(f"stage_cpu_ref_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is imported
    spec.loader.exec_module(module)
    return module


def audience_rows(rows: int) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """The audience query's columns and rows over a fresh warehouse of `rows` customers."""
    import sqlalchemy as sa

    from outbound_pipeline.audience import audience_sql
    from outbound_pipeline.warehouse import create_engine

    config = bench_config()
    campaign = config.campaign(CAMPAIGN_KEY)
    with scratch_database("sqlite", "stage_cpu") as url:
        engine = create_engine(url)
        generate_brand_tables(engine, rows, messy=True)
        with engine.connect() as conn:
            result = conn.execute(
                sa.text(audience_sql(campaign, config, conn.dialect)),
                {"outbound_consent_category": campaign.consent_category},
            )
            names = tuple(result.keys())
            values = [tuple(row) for row in result]
        engine.dispose()
    return names, values


def stage_work(
    extraction: ModuleType, rendering: ModuleType
) -> tuple[Work, Work, Any, Callable[[], None]]:
    """The audience's and the messages' chunk work of these modules, the audience row's columns
    (for rendering's input, taken from an audience row), and what empties the version's caches
    between chunks. Their rows are kept as lists, as SQLite's and PostgreSQL's loaders take them:
    what is measured is the stages' own work, not DuckDB's packing into a record batch."""
    from outbound_pipeline.warehouse.dialects.arrow import as_is, as_rows

    config = bench_config()
    campaign = config.campaign(CAMPAIGN_KEY)
    template = config.template_for(campaign)
    verdicts, render = extraction._verdict_chunk, rendering._render_chunk
    # Versions from before aa46339 take no `pack`: their rows were always lists. From 59d6059 on
    # the stages build columns (their `chunk` is the query's), which `as_rows` makes rows.
    verdict_parameters = inspect.signature(verdicts).parameters
    verdict_pack = (
        ((as_rows if "chunk" in verdict_parameters else as_is),)
        if "pack" in verdict_parameters
        else ()
    )
    # The columns that tell the duplicates too, as SQLite and PostgreSQL gather them (`gather`).
    if "gather" in verdict_parameters:
        verdict_pack += (True,)
    render_pack = (
        ((as_rows if hasattr(rendering, "_message_columns") else as_is),)
        if "pack" in inspect.signature(render).parameters
        else ()
    )
    rules = getattr(rendering, "_short_violation", None)
    if rules is None and hasattr(rendering, "render_parameters"):
        from outbound_pipeline.messages import parameters  # where the cache moved with rendering

        rules = parameters._short_violation

    def reset() -> None:
        if rules is not None:  # rendering's cache of WhatsApp's rules (ce30114 on)
            rules.cache_clear()

    def verdict_chunk(names: Sequence[str], chunk: Sequence[Any], start: int) -> Any:
        fixed = (campaign, template, DAY, "stage_cpu", config.consent_columns, names)
        return verdicts(*fixed, *verdict_pack, chunk, start)

    arms = rendering.campaign_arms(campaign, config)
    return (
        verdict_chunk,
        functools.partial(render, campaign, arms, DAY, "stage_cpu", None, *render_pack),
        extraction.ROW_COLUMNS,
        reset,
    )


def eligible_chunks(
    rows: Sequence[Sequence[Any]], columns: Sequence[str]
) -> list[list[tuple[Any, ...]]]:
    """What rendering reads of the eligible audience rows, in chunks."""
    from outbound_pipeline.messages.rendering import AUDIENCE_COLUMNS_READ

    picked = [columns.index(c) for c in AUDIENCE_COLUMNS_READ]
    eligible = columns.index("eligible")
    kept = [tuple(row[i] for i in picked) for row in rows if row[eligible]]
    return [kept[i : i + CHUNK_ROWS] for i in range(0, len(kept), CHUNK_ROWS)]


def measure(
    versions: dict[str, tuple[Work, Work, Any, Callable[[], None]]],
    names: tuple[str, ...],
    values: list[tuple[Any, ...]],
    rounds: int,
) -> dict[str, Any]:
    """Each version's CPU us a row for the audience and the messages, alternating chunk by chunk,
    and whether the versions gave the same rows. The garbage collector runs with a stage's
    settings (`collector.bulk_work`: the young threshold a worker has, the heap set aside)."""
    from outbound_pipeline.collector import bulk_work
    from outbound_pipeline.whatsapp import phones

    chunks = [values[i : i + CHUNK_ROWS] for i in range(0, len(values), CHUNK_ROWS)]
    labels = list(versions)
    seconds = {label: {"audience": 0.0, "messages": 0.0} for label in labels}
    written: dict[str, list[list[Any]]] = {label: [] for label in labels}
    rendered: dict[str, list[list[Any]]] = {label: [] for label in labels}
    with bulk_work():
        for round_ in range(rounds):
            for number, chunk in enumerate(chunks):
                order = labels if (number + round_) % 2 == 0 else labels[::-1]
                for label in order:
                    verdicts, render, columns, reset = versions[label]
                    phones._normalise.cache_clear()  # each version parses every phone afresh
                    reset()  # and judges every parameter afresh
                    started = time.process_time()
                    rows = verdicts(names, chunk, number * CHUNK_ROWS)[0]
                    seconds[label]["audience"] += time.process_time() - started
                    to_render = eligible_chunks(rows, columns)
                    started = time.process_time()
                    messages = [render(part, 0)[0] for part in to_render]
                    seconds[label]["messages"] += time.process_time() - started
                    if round_ == 0:
                        written[label].extend(rows)
                        rendered[label].extend(row for part in messages for row in part)
    eligible = len(rendered[labels[0]])
    out: dict[str, Any] = {
        label: {
            "audience_us_per_row": round(
                seconds[label]["audience"] / (rounds * len(values)) * 1e6, 2
            ),
            "messages_us_per_row": round(seconds[label]["messages"] / (rounds * eligible) * 1e6, 2),
        }
        for label in labels
    }
    out["rows"], out["eligible"] = len(values), eligible
    if len(labels) == 2:
        first, second = labels
        out["same_rows"] = written[first] == written[second] and rendered[first] == rendered[second]
        for stage in ("audience", "messages"):
            out[f"{stage}_{second}_over_{first}"] = round(
                seconds[second][stage] / seconds[first][stage], 3
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="customers (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the rows (default 3)")
    parser.add_argument("--compare", metavar="REF", help="a git commit to alternate with")
    parser.add_argument("--output", default="stage_cpu", help="results/<output>.json")
    args = parser.parse_args()

    from outbound_pipeline.audience import extraction
    from outbound_pipeline.messages import rendering

    names, values = audience_rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="outbound_stage_cpu_") as tmp:
        versions = {}
        if args.compare:
            versions[args.compare] = stage_work(
                module_at(args.compare, "extraction", Path(tmp)),
                module_at(args.compare, "rendering", Path(tmp)),
            )
        versions["this tree"] = stage_work(extraction, rendering)
        results = measure(versions, names, values, args.rounds)
    print_table(
        f"CPU a row, {results['rows']} audience rows, {results['eligible']} messages",
        [
            [label, results[label]["audience_us_per_row"], results[label]["messages_us_per_row"]]
            for label in versions
        ],
        header=["code", "audience us/row", "messages us/row"],
    )
    if args.compare:
        print(f"  same rows: {results['same_rows']}")
    path = write_results(
        args.output,
        {
            "settings": {"rows": args.rows, "rounds": args.rounds, "compare": args.compare},
            "results": results,
        },
    )
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
