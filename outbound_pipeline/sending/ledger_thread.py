"""The send loop's one database thread, with the connection it keeps between transactions.

Database work runs on this one thread so it never blocks the event loop and never races itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from outbound_pipeline.warehouse import database_message

T = TypeVar("T")


def safe_detail(exc: BaseException) -> str:
    """An error's text fit for logs and errors."""
    # A statement error's own text lists the SQL parameters (full phone numbers): keep the driver's.
    return database_message(exc)[:300]


def store_unreachable(exc: BaseException) -> bool:
    """A state-store error that says the store is out of reach for now (a connection refused or
    lost, a SQLite file locked), not that it refused a statement: worth trying again later."""
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


class LedgerThread:
    """Runs ledger functions one at a time, each in its own transaction, off the event loop."""

    def __init__(self, engine: sa.Engine, log: logging.Logger | Any) -> None:
        self._engine = engine
        self._log = log
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ledger"
        )
        # The ledger thread's connection, kept between transactions: opening one per claim or flush
        # (SQLite's engine pools none) cost about a millisecond each.
        self._conn: sa.Connection | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run fn(conn, *args) in its own transaction on the ledger thread."""

        def run() -> T:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = self._engine.connect()
                try:
                    with self._conn.begin():
                        return fn(self._conn, *args, **kwargs)
                except sa.exc.DBAPIError as exc:
                    self._close_connection()
                    # The kept connection was lost while idle (a server restart, an idle timeout):
                    # once more on a new one. Safe for every ledger write: an uncommitted one is
                    # redone, and rows a lost commit claimed are ours, released unsent at the end.
                    if attempt == 1 and exc.connection_invalidated:
                        continue
                    raise
                except BaseException:
                    # Its transaction is rolled back; the connection itself may be broken: not reused.
                    self._close_connection()
                    raise
            raise AssertionError("unreachable")

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    def _close_connection(self) -> None:
        """On the ledger thread (SQLite connections belong to the thread that opened them)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:
                self._log.warning(f"closing the ledger connection failed: {safe_detail(exc)}")

    def close(self) -> None:
        """Close the kept connection on its own thread, then end the thread."""
        self._executor.submit(self._close_connection).result()
        self._executor.shutdown(wait=True)
