"""The current consent of a customer for a category: the latest row of the brand's consent table.

One definition serves extraction (joined to the audience query) and the last-moment re-check before
each batch is sent. On a tie of timestamps an opt-out wins: doubt never sends.

The send step asks a `ConsentSource` for the current states of a batch's customers:
`WarehouseConsent`, a short query of the brand's consent table per batch, on a warehouse connection
of its own (the claim's state-store transaction waits meanwhile), on SQLite and PostgreSQL; on an
analytical warehouse, `consent_poll.PolledConsent`, which polls the table for changes instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from outbound_pipeline.warehouse.engine import reading

OPTED_IN, OPTED_OUT = "opted_in", "opted_out"


def brand_table(name: str, *columns: str | sa.ColumnClause[Any]) -> sa.TableClause:
    """A brand's table by name (`schema.table` allowed), with the columns given (names, or typed
    columns where a bound value needs the type's processing)."""
    schema, _, table = name.rpartition(".")
    clauses = (sa.column(c) if isinstance(c, str) else c for c in columns)
    return sa.table(table, *clauses, schema=schema or None)


def current_consent_select(
    consents_table: str,
    category: str,
    customer_ids: Sequence[Any] | None = None,
    changed_ids: sa.Select[Any] | None = None,
) -> sa.Select[Any]:
    """The latest row per customer in the category: of `customer_ids`, of the customers a
    subquery names (`changed_ids`), or of every customer."""
    t = brand_table(consents_table, "customer_id", "category", "status", "updated_at")
    rank = sa.func.row_number().over(
        partition_by=t.c.customer_id,
        order_by=(t.c.updated_at.desc(), sa.case((t.c.status == OPTED_OUT, 0), else_=1)),
    )
    inner = sa.select(t.c.customer_id, t.c.status, t.c.updated_at, rank.label("rank")).where(
        t.c.category == category
    )
    if customer_ids is not None:
        inner = inner.where(t.c.customer_id.in_(list(customer_ids)))
    if changed_ids is not None:
        inner = inner.where(t.c.customer_id.in_(changed_ids))
    latest = inner.subquery("latest_consent")
    return sa.select(latest.c.customer_id, latest.c.status, latest.c.updated_at).where(
        latest.c.rank == 1
    )


def current_consent_states(
    conn: sa.Connection,
    consents_table: str,
    category: str,
    customer_ids: Iterable[Any],
    id_is_int: bool,
) -> dict[str, str]:
    """customer_id (as text) -> current status, for the claims' and the send loop's re-checks.
    Customers with no consent row in the category are absent."""
    ids: list[Any] = list({c for c in customer_ids if c is not None})
    if id_is_int:
        ids = [int(c) for c in ids if str(c).lstrip("-").isdigit()]
    if not ids:
        return {}
    select = current_consent_select(consents_table, category, ids)
    return {str(row.customer_id): row.status for row in conn.execute(select)}


def consent_id_is_integer(conn: sa.Connection, consents_table: str) -> bool:
    """Whether the brand keys consents by an integer customer_id (the ledger keeps text).

    Told from one value of the column, not from the catalog: every dialect answers a SELECT the
    same way, not every one has an inspector (DuckDB's reads PostgreSQL's catalog)."""
    t = brand_table(consents_table, "customer_id")
    try:
        value = conn.execute(
            sa.select(t.c.customer_id).where(t.c.customer_id.is_not(None)).limit(1)
        ).scalar()
    except sa.exc.DBAPIError:
        conn.rollback()  # a missing table: the transaction is unusable on PostgreSQL
        return False
    return isinstance(value, int) and not isinstance(value, bool)


class ConsentSource(Protocol):
    """Where the send step reads the current consent of the customers it is about to message."""

    def states(self, customer_ids: Iterable[Any]) -> dict[str, str]:
        """customer_id (as text) -> current status in the campaign's category; customers with no
        consent row in it are absent."""
        ...

    def refresh_due(self) -> bool:
        """Whether `refresh` has anything to read now (checked without leaving the event loop:
        a claim needs no thread for a source with nothing to read ahead)."""
        ...

    def refresh(self) -> None:
        """Read now what `states` would otherwise read in the claim's transaction, before it opens:
        that transaction (SQLite's write lock on the state store) then never waits on the
        warehouse. A source that answers each batch from the warehouse itself does nothing."""
        ...


class WarehouseConsent:
    """The brand's consent table in the warehouse, queried for each batch: right for a warehouse
    that answers in milliseconds (SQLite, PostgreSQL). Each call takes a connection of its own and
    gives it back, so nothing stays open on a warehouse that admits one process at a time."""

    def __init__(self, engine: sa.Engine, consents_table: str, category: str) -> None:
        self._engine = engine
        self._table = consents_table
        self._category = category
        self._id_is_int: bool | None = None

    def refresh_due(self) -> bool:
        return False

    def refresh(self) -> None:
        """Nothing to read ahead: a SQLite or PostgreSQL warehouse answers each batch in
        milliseconds."""

    def states(self, customer_ids: Iterable[Any]) -> dict[str, str]:
        ids = list(customer_ids)
        if not ids:
            return {}
        # A read never takes SQLite's write lock: the state store may be the same file.
        with reading(self._engine) as conn:
            if self._id_is_int is None:
                self._id_is_int = consent_id_is_integer(conn, self._table)
            return current_consent_states(conn, self._table, self._category, ids, self._id_is_int)
