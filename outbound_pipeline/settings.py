"""The environment settings of the code location, each optional, and the resources built from them.

- `OUTBOUND_WAREHOUSE_URL`: the brand's warehouse (SQLAlchemy URL, any dialect); default: the
  embedded SQLite file seeded with demo data (under `OUTBOUND_HOME`, default `./.outbound`);
- `OUTBOUND_STATE_URL`: the state store (SQLite or PostgreSQL URL): the ledger and everything that
  coordinates sending; default: the warehouse itself when that is SQLite or PostgreSQL. Any other
  warehouse without it fails loading with an error that says so;
- `OUTBOUND_CONFIG`: the campaigns file (`templates:` and `campaigns:`); default: the bundled demo;
- `IADVIZE_MODE`: `sandbox` (default: the bundled sandbox, nothing real is sent) or `live`;
- `IADVIZE_GRAPHQL_URL`, `IADVIZE_TOKEN_URL`, `IADVIZE_USERNAME`, `IADVIZE_PASSWORD`: the live API
  (all four are required in live mode), `IADVIZE_INPUT_TYPE`: its send mutation's input type;
- `IADVIZE_LOGINS_PER_MINUTE` (default 8), `IADVIZE_LOGIN_WAIT_SECONDS` (default 600): the login
  budget every run of the user shares, and how long a run waits for a login;
- `OUTBOUND_ALERT_WEBHOOK_URL`: where the alert sensors post (outbound_pipeline.reporting);
- `OUTBOUND_CONSENT_CHECK` (`auto`, `batch` or `poll`), `OUTBOUND_CONSENT_BOUND_SECONDS` (30),
  `OUTBOUND_CONSENT_LOOKBACK_HOURS` (24): how the send step re-checks consent at the last moment
  (outbound_pipeline.warehouse.consent_poll).
- `OUTBOUND_UNSUBSCRIBE_SECRET`, `OUTBOUND_UNSUBSCRIBE_BASE_URL`: the signing secret of the
  unsubscribe links and the endpoint's public URL, for a template variable whose source is
  `unsubscribe` (outbound_pipeline.unsubscribe).

Secrets and URLs that may hold one reach the resources as `dg.EnvVar`, never as values: they stay out
of the UI and the run config.
"""

from __future__ import annotations

import os

import dagster as dg

from outbound_pipeline.clock import ClockResource
from outbound_pipeline.iadvize import IAdvizeError, IAdvizeResource, missing_live_settings
from outbound_pipeline.ledger import StateStoreError, StateStoreResource, state_dialect_problem
from outbound_pipeline.reporting import WEBHOOK_URL, alerts_from_env
from outbound_pipeline.unsubscribe import BASE_URL_ENV, SECRET_ENV, UnsubscribeLinksResource
from outbound_pipeline.warehouse import (
    CONSENT_CHECKS,
    ConsentSettings,
    ConsentSettingsError,
    WarehouseResource,
)

WAREHOUSE_URL = "OUTBOUND_WAREHOUSE_URL"
STATE_URL = "OUTBOUND_STATE_URL"
CONFIG_PATH = "OUTBOUND_CONFIG"
IADVIZE_MODE = "IADVIZE_MODE"
IADVIZE_GRAPHQL_URL = "IADVIZE_GRAPHQL_URL"
IADVIZE_TOKEN_URL = "IADVIZE_TOKEN_URL"
IADVIZE_USERNAME = "IADVIZE_USERNAME"
IADVIZE_PASSWORD = "IADVIZE_PASSWORD"
IADVIZE_INPUT_TYPE = "IADVIZE_INPUT_TYPE"
IADVIZE_LOGINS_PER_MINUTE = "IADVIZE_LOGINS_PER_MINUTE"
IADVIZE_LOGIN_WAIT_SECONDS = "IADVIZE_LOGIN_WAIT_SECONDS"
IADVIZE_MODES = ("sandbox", "live")
CONSENT_CHECK = "OUTBOUND_CONSENT_CHECK"
CONSENT_BOUND_SECONDS = "OUTBOUND_CONSENT_BOUND_SECONDS"
CONSENT_LOOKBACK_HOURS = "OUTBOUND_CONSENT_LOOKBACK_HOURS"


def _env_or_none(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def config_path() -> str | None:
    """The campaigns file named by the environment, or None for the bundled demo."""
    return os.environ.get(CONFIG_PATH) or None


def uses_embedded_warehouse() -> bool:
    """No warehouse URL: the embedded SQLite file with the demo data."""
    return not os.environ.get(WAREHOUSE_URL)


def alert_webhook_is_set() -> bool:
    return bool(os.environ.get(WEBHOOK_URL))


def iadvize_mode() -> str:
    """`sandbox` (also when unset or empty) or `live`; anything else is refused."""
    mode = os.environ.get(IADVIZE_MODE, "sandbox").strip().lower() or "sandbox"
    if mode not in IADVIZE_MODES:
        raise IAdvizeError(f"{IADVIZE_MODE}={mode!r}: expected 'sandbox' (default) or 'live'")
    return mode


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise ConsentSettingsError(f"{name}={text!r}: expected a number") from None


def consent_settings_from_env() -> ConsentSettings:
    """The last-moment consent check's settings, refused at load with the variable's name."""
    check = os.environ.get(CONSENT_CHECK, "").strip().lower() or "auto"
    if check not in CONSENT_CHECKS:
        raise ConsentSettingsError(
            f"{CONSENT_CHECK}={check!r}: expected 'auto' (default: per batch on SQLite and "
            "PostgreSQL, polled elsewhere), 'batch' or 'poll'"
        )
    defaults = ConsentSettings()
    bound = _env_number(CONSENT_BOUND_SECONDS, defaults.bound_seconds)
    lookback = _env_number(CONSENT_LOOKBACK_HOURS, defaults.lookback_hours)
    try:
        return ConsentSettings(check, bound, lookback)
    except ConsentSettingsError as exc:
        variable = CONSENT_BOUND_SECONDS if "bound" in str(exc) else CONSENT_LOOKBACK_HOURS
        raise ConsentSettingsError(f"{variable}: {exc}") from None


def warehouse_from_env() -> WarehouseResource:
    consent = consent_settings_from_env()
    # EnvVar keeps a URL's password out of the UI and the run config.
    return WarehouseResource(
        url=_env_or_none(WAREHOUSE_URL),
        consent_check=consent.check,
        consent_bound_seconds=consent.bound_seconds,
        consent_lookback_hours=consent.lookback_hours,
    )


def state_for(url: str | None, from_variable: str | None = None) -> StateStoreResource:
    """The state store at `url` (None: the embedded default), refused at once when that database
    cannot hold the state. `from_variable`: the environment variable the URL comes from, kept as a
    `dg.EnvVar` (a password in it never reaches the UI)."""
    problem = state_dialect_problem(url) if url else None
    if problem and from_variable == STATE_URL:
        raise StateStoreError(
            f"{STATE_URL}: {problem}. Set it to a SQLite file or a PostgreSQL database."
        )
    if problem:
        raise StateStoreError(
            f"{STATE_URL} is not set, and the warehouse ({WAREHOUSE_URL}) cannot be the state "
            f"store: {problem}. Set {STATE_URL} to a SQLite file "
            "(sqlite:////var/lib/outbound/state.sqlite) or a PostgreSQL database "
            "(postgresql://user@host:5432/outbound_state). Nothing runs until then."
        )
    if from_variable:
        return StateStoreResource(url=dg.EnvVar(from_variable))
    return StateStoreResource(url=url or None)


def state_from_env() -> StateStoreResource:
    """OUTBOUND_STATE_URL, else the warehouse's database (SQLite or PostgreSQL only)."""
    for variable in (STATE_URL, WAREHOUSE_URL):
        url = os.environ.get(variable)
        if url:
            return state_for(url, variable)
    return state_for(None)


def iadvize_from_env() -> IAdvizeResource:
    mode = iadvize_mode()
    if mode == "live" and (missing := missing_live_settings()):
        raise IAdvizeError(
            f"{IADVIZE_MODE}=live needs {', '.join(missing)} in the environment; live mode never falls "
            "back to the sandbox"
        )
    return IAdvizeResource(
        mode=mode,
        graphql_url=_env_or_none(IADVIZE_GRAPHQL_URL),
        token_url=_env_or_none(IADVIZE_TOKEN_URL),
        username=_env_or_none(IADVIZE_USERNAME),
        password=_env_or_none(IADVIZE_PASSWORD),
        input_type_name=os.environ.get(IADVIZE_INPUT_TYPE) or None,
        **_login_settings(),
        config_path=config_path(),
    )


def unsubscribe_links_from_env() -> UnsubscribeLinksResource:
    # EnvVar: the secret never reaches the UI nor the run config.
    return UnsubscribeLinksResource(
        secret=_env_or_none(SECRET_ENV), base_url=os.environ.get(BASE_URL_ENV) or None
    )


def _login_settings() -> dict[str, float]:
    """The login budget and wait from the environment, when set (else the resource's defaults)."""
    settings: dict[str, float] = {}
    for variable, field, kind in (
        (IADVIZE_LOGINS_PER_MINUTE, "logins_per_minute", int),
        (IADVIZE_LOGIN_WAIT_SECONDS, "login_wait_seconds", float),
    ):
        value = os.environ.get(variable, "").strip()
        if not value:
            continue
        try:
            settings[field] = kind(value)
        except ValueError:
            raise IAdvizeError(f"{variable}={value!r}: expected a number") from None
        if settings[field] <= 0:
            raise IAdvizeError(f"{variable}={value!r}: expected a number above 0")
    return settings


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resources every asset, op and sensor of the code location uses."""
    return {
        "warehouse": warehouse_from_env(),
        "state": state_from_env(),
        "iadvize": iadvize_from_env(),
        "clock": ClockResource(),
        "alerts": alerts_from_env(),
        "unsubscribe_links": unsubscribe_links_from_env(),
    }
