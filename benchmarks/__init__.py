"""Benchmarks of the pipeline against the bare minimum that does the same work.

Each is one command from the repository root, prints a short table and writes
`benchmarks/results/<name>.json`:

    python -m benchmarks.send_throughput   # deliveries path vs a bare aiohttp loop, same server
    python -m benchmarks.audience_scale    # 1M-row audience + messages vs pandas.read_sql
    python -m benchmarks.rerun_cost        # re-running a fully sent 100,000-row partition

`--help` on each lists the flags to scale it down.
"""
