"""The resources every asset, op and sensor of the code location uses, built from the environment."""

from __future__ import annotations

import dagster as dg

from outbound_pipeline.settings import resources_from_env


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=resources_from_env())
