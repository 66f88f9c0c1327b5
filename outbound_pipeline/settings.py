"""Resources built from the environment: the contract's settings, each optional."""

from __future__ import annotations

import os

import dagster as dg

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.iadvize import IAdvizeError, IAdvizeResource, missing_live_settings
from outbound_pipeline.reporting import alerts_from_env
from outbound_pipeline.warehouse import WarehouseResource

WAREHOUSE_URL = "OUTBOUND_WAREHOUSE_URL"
CONFIG_PATH = "OUTBOUND_CONFIG"
IADVIZE_MODE = "IADVIZE_MODE"


def _env_or_none(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def warehouse_from_env() -> WarehouseResource:
    # EnvVar keeps a URL's password out of the UI and the run config.
    return WarehouseResource(url=_env_or_none(WAREHOUSE_URL))


def iadvize_from_env() -> IAdvizeResource:
    mode = os.environ.get(IADVIZE_MODE, "sandbox").strip().lower() or "sandbox"
    if mode not in ("sandbox", "live"):
        raise IAdvizeError(f"{IADVIZE_MODE}={mode!r}: expected 'sandbox' (default) or 'live'")
    if mode == "live" and (missing := missing_live_settings()):
        raise IAdvizeError(
            f"{IADVIZE_MODE}=live needs {', '.join(missing)} in the environment; live mode never falls "
            "back to the sandbox"
        )
    return IAdvizeResource(
        mode=mode,
        graphql_url=_env_or_none("IADVIZE_GRAPHQL_URL"),
        token_url=_env_or_none("IADVIZE_TOKEN_URL"),
        username=_env_or_none("IADVIZE_USERNAME"),
        password=_env_or_none("IADVIZE_PASSWORD"),
        input_type_name=os.environ.get("IADVIZE_INPUT_TYPE") or None,
        config_path=os.environ.get(CONFIG_PATH) or None,
    )


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": warehouse_from_env(),
        "iadvize": iadvize_from_env(),
        "clock": ClockResource(),
        "alerts": alerts_from_env(),
    }
