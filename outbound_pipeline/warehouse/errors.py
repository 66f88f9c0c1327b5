"""Database errors, safe to show: the database's reason without the rows' values.

A driver's message can quote a whole row, phone number included (PostgreSQL's DETAIL names a
violated key or a failing row), and the Dagster UI shows every line of a failure and its causes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import sqlalchemy as sa

from outbound_pipeline.whatsapp import mask_phones_in

P = ParamSpec("P")
R = TypeVar("R")


class WarehouseError(RuntimeError):
    """A database operation failed. The message names what failed and the database's reason, never
    the rows' values: the driver's own message may quote a whole row, phone number included."""


def as_raised_by_sqlalchemy(
    exc: BaseException,
    dialect: sa.Dialect,
    statement: str | None = None,
    params: object = None,
    hide_parameters: bool = True,
) -> sa.exc.StatementError:
    """A driver's error raised where SQLAlchemy did not run the statement (rows read straight from
    the driver's cursor or DuckDB's reader) as SQLAlchemy would raise it: its DBAPIError subclass
    for the driver's class. Another kind of error (Arrow's OSError for a later batch) as the
    driver's base Error, its message kept. Its parameters hidden, as the engines hide them
    (`hide_parameters`): a value may be a phone number."""
    base = dialect.loaded_dbapi.Error
    orig = exc if isinstance(exc, base) else base(str(exc))
    return sa.exc.DBAPIError.instance(
        statement, params, orig, base, hide_parameters=hide_parameters, dialect=dialect
    )


def database_message(exc: BaseException) -> str:
    """The database's own message for an error, every line, phone numbers masked: for a query the
    brand wrote, whose LINE and HINT lines help fix it. The driver's message, not SQLAlchemy's,
    which goes on to list the statement and its parameters."""
    orig = getattr(exc, "orig", None) or exc
    return mask_phones_in(str(orig).strip())


def database_reason(exc: BaseException) -> str:
    """The database's reason for an error, safe for logs and the UI: its error class and first line
    (a constraint, a column, a type), phone numbers masked. The lines after it (PostgreSQL's DETAIL
    and CONTEXT) quote rows and keys, and a ledger key is a phone number."""
    orig = getattr(exc, "orig", None) or exc
    first = (database_message(exc).splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first[:300]}"


def rows_kept_out_of_errors(compute: Callable[P, R]) -> Callable[P, R]:
    """A Dagster body (asset, op, sensor) whose database errors leave it as WarehouseError with the
    database's reason only. The UI shows every line of a failure and of its causes, and a driver's
    message can go on to quote a row (PostgreSQL's DETAIL names a violated key or a failing row)."""

    @functools.wraps(compute)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return compute(*args, **kwargs)
        except sa.exc.DBAPIError as exc:
            raise WarehouseError(f"a database statement failed: {database_reason(exc)}") from None

    return run
