"""The current consent of a customer for a category: the latest row of the brand's consent table.

One definition serves extraction (joined to the audience query) and the last-moment re-check before
each batch is sent. On a tie of timestamps an opt-out wins: doubt never sends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

OPTED_IN, OPTED_OUT = "opted_in", "opted_out"


def brand_table(name: str, *columns: str) -> sa.TableClause:
    schema, _, table = name.rpartition(".")
    return sa.table(table, *(sa.column(c) for c in columns), schema=schema or None)


def current_consent_select(
    consents_table: str, category: str, customer_ids: Sequence[Any] | None = None
) -> sa.Select[Any]:
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
    """Whether the brand keys consents by an integer customer_id (the ledger keeps text)."""
    schema, _, table = consents_table.rpartition(".")
    try:
        columns = sa.inspect(conn).get_columns(table, schema=schema or None)
    except sa.exc.NoSuchTableError:
        return False
    for column in columns:
        if column["name"] == "customer_id":
            try:
                return column["type"].python_type is int
            except NotImplementedError:
                return False
    return False
