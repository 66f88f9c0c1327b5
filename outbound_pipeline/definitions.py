"""The code location: everything under `defs/`, loaded when Dagster asks for it.

- `defs/campaigns/`: the campaign component, one per configuration file (`OUTBOUND_CONFIG`): every
  campaign's assets, checks, jobs, schedules and sensors, and the brand tables they read;
- `defs/resources.py`: the warehouse, state store, iAdvize, clock and alert resources, from the
  environment (a warehouse that cannot hold the state, without `OUTBOUND_STATE_URL`, fails here).

`workspace.yaml` and `dagster dev -m outbound_pipeline.definitions` load `defs`; the package exposes
the same as `outbound_pipeline.code_location` for `dagster ... -m outbound_pipeline`.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
