"""The pipeline's own suppression list: phones that asked to receive nothing more, from any campaign.

The table lives in the state store (SQLite or PostgreSQL), on a MetaData of its own that the state
store adds to its tables. It records the phone, where the request came from and when, nothing that
identifies the request itself (no address, no user agent, no token).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from outbound_pipeline.clock import as_utc
from outbound_pipeline.warehouse import dialect_insert, one_of
from outbound_pipeline.whatsapp import E164_SHAPE

metadata = sa.MetaData()

suppressions = sa.Table(
    "outbound_suppressions",
    metadata,
    sa.Column("phone", sa.String(16), primary_key=True, comment="Phone in E.164."),
    sa.Column("source", sa.String(16), nullable=False, comment="How it was asked: link or cli."),
    sa.Column(
        "suppressed_at",
        sa.DateTime(timezone=True),
        nullable=False,
        comment="When the first request was recorded (UTC); a repeated one keeps it.",
    ),
    comment="Phones that receive no message from any campaign.",
)

# Phones per query of is_suppressed (one bound parameter: `warehouse.one_of`).
_CHUNK = 10_000
# The PostgreSQL advisory lock that orders suppressions and dispatch marks (see lock_the_list).
_LIST_LOCK_KEY = 0x6F75_7462_7375_7070  # "outbsupp"


class SuppressionSource(enum.StrEnum):
    """Where a suppression came from (the `source` column)."""

    LINK = "link"  # the recipient's signed unsubscribe link
    CLI = "cli"  # an operator, by hand


@dataclass(frozen=True)
class Suppression:
    phone: str
    source: str
    suppressed_at: dt.datetime


def create_suppressions_table(engine: sa.Engine) -> None:
    """Create outbound_suppressions if missing (needs CREATE rights: the state store's owner)."""
    with engine.begin() as conn:
        metadata.create_all(conn, checkfirst=True)


def lock_the_list(conn: sa.Connection, *, to_write: bool) -> None:
    """Order this transaction with the list's writers, until it ends. A dispatch mark reads the
    list under the shared lock, a suppression is written under the exclusive one: on PostgreSQL a
    mark that commits after a suppression has therefore read it (without the lock, a suppression
    committed between the mark's read and its commit would let its call leave). SQLite's single
    writer orders them already. Needs no rights beyond the function's default EXECUTE."""
    if conn.dialect.name == "postgresql":
        lock = sa.func.pg_advisory_xact_lock if to_write else sa.func.pg_advisory_xact_lock_shared
        conn.execute(sa.select(lock(sa.literal(_LIST_LOCK_KEY, sa.BigInteger))))


def suppress(conn: sa.Connection, phone: str, source: SuppressionSource, now: dt.datetime) -> None:
    """Record that `phone` receives nothing more. Idempotent: a second request keeps the first's
    time and source. Needs only INSERT on the table: PostgreSQL asks SELECT rights for an ON CONFLICT
    that names its columns, none for a bare ON CONFLICT DO NOTHING (the primary key is the only
    unique constraint, so both mean the same)."""
    if not E164_SHAPE.fullmatch(phone):
        raise ValueError("a suppression needs a phone number in E.164")
    lock_the_list(conn, to_write=True)
    statement = dialect_insert(conn, suppressions).values(
        phone=phone, source=SuppressionSource(source).value, suppressed_at=as_utc(now)
    )
    conn.execute(statement.on_conflict_do_nothing())


def is_suppressed(conn: sa.Connection, phones: Iterable[str]) -> set[str]:
    """The phones among `phones` that are on the list."""
    wanted = sorted(set(phones))
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        query = sa.select(suppressions.c.phone).where(
            one_of(conn.dialect, suppressions.c.phone, chunk)
        )
        found.update(conn.scalars(query))
    return found


def suppressed_if_at_most(conn: sa.Connection, most: int) -> set[str] | None:
    """Every phone on the list, if it holds at most `most` of them, else None."""
    phones = set(conn.scalars(sa.select(suppressions.c.phone).limit(most + 1)))
    return phones if len(phones) <= most else None


def list_suppressions(conn: sa.Connection) -> list[Suppression]:
    """The whole list, oldest first (for the CLI and the copy published to the warehouse)."""
    query = sa.select(suppressions).order_by(suppressions.c.suppressed_at, suppressions.c.phone)
    return [
        Suppression(row.phone, row.source, as_utc(row.suppressed_at))  # type: ignore[arg-type]
        for row in conn.execute(query)
    ]
