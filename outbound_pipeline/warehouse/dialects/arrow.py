"""Arrow record batches between a stage's process, its workers and an engine that scans Arrow in
place (DuckDB).

A stage's chunk travels to a worker process and its rows come back pickled. As Python tuples and
lists that costs every value its own object twice (pickled, then built again), and DuckDB then reads
each one back from Python. As a record batch a chunk pickles as a few buffers, and DuckDB scans the
batch without a Python value: at a million audience rows the stage process spends seconds less.

- `arrow_query`: a query's rows as record batches, straight from DuckDB's own reader (a relation:
  streamed, never the whole result at once), where each value converts back to the Python value
  its DB-API cursor would give (`SAME_VALUES`; a test compares them).
- `rows_of`, `every_column`, `columns_of`: a chunk's rows as tuples (in the worker), its values
  column by column, or some of its columns, whichever form it came in.
- `BatchPacker`: a worker's rows, or its columns, packed as a record batch of a table's columns."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from outbound_pipeline.warehouse.errors import as_raised_by_sqlalchemy

# DuckDB's types whose values `rows_of` gives as its DB-API cursor does: the same Python type and
# value (test_arrow_chunks compares them). A query returning any other (a DECIMAL, a UUID, an
# INTERVAL, a list...) is read through the cursor.
SAME_VALUES = frozenset(
    {
        "VARCHAR",
        "BOOLEAN",
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "FLOAT",
        "DOUBLE",
        "DATE",
        "TIMESTAMP",
        "TIMESTAMP WITH TIME ZONE",
        '"NULL"',
    }
)

# A chunk of a query's rows: tuples, or a record batch of its columns.
Chunk = Sequence[tuple[Any, ...]] | pa.RecordBatch


def arrow_query(
    conn: sa.Connection, statement: sa.Executable, params: Mapping[str, Any], size: int
) -> tuple[tuple[str, ...], Iterator[pa.RecordBatch], Callable[[], None]] | None:
    """`statement` (a text() query bound with `params`, or a select) run on DuckDB's own
    connection as a relation: its column names, its record batches of `size` rows, and what
    closes the reader (until then the connection runs no other statement, a rollback included).
    None (read it through SQLAlchemy's cursor then) when the engine is not DuckDB, the statement
    is another construct or has a parameter SQLAlchemy converts or expands, or a column's type is
    not in SAME_VALUES. A failure is raised as SQLAlchemy raises the driver's."""
    if conn.dialect.name != "duckdb" or translates_schema(conn, statement):
        return None
    if isinstance(statement, sa.TextClause):
        statement = statement.bindparams(**params)
    elif not isinstance(statement, sa.Select):
        return None
    compiled = statement.compile(dialect=conn.dialect)
    if any(_bound_by_sqlalchemy(bind, conn.dialect) for bind in compiled.binds.values()):
        return None
    positional = [compiled.params[name] for name in compiled.positiontup or ()]
    duck: Any = conn.connection.driver_connection
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        relation = duck.sql(compiled.string, params=positional or None)
        if any(str(type_) not in SAME_VALUES for type_ in relation.types):
            return None
        reader = relation.to_arrow_reader(size)
    except dbapi_error as exc:
        raise as_raised_by_sqlalchemy(
            exc, conn.dialect, compiled.string, positional, conn.engine.hide_parameters
        ) from None
    return tuple(relation.columns), _batches(reader, conn.dialect), reader.close


def translates_schema(conn: sa.Connection, statement: sa.Executable) -> bool:
    """Whether SQLAlchemy would rename the statement's schemas as it executes it (a
    `schema_translate_map` of the connection's or the statement's): a driver given the compiled
    SQL would query the names as written."""
    options = {**conn.get_execution_options(), **statement.get_execution_options()}
    return bool(options.get("schema_translate_map"))


def _bound_by_sqlalchemy(bind: sa.BindParameter[Any], dialect: sa.Dialect) -> bool:
    """Whether SQLAlchemy does more to this parameter than hand its value over (an expanding IN
    list, a type's conversion): such a statement goes through SQLAlchemy's cursor."""
    return bind.expanding or converts_bound_values(bind.type, dialect)


def converts_bound_values(type_: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> bool:
    """Whether SQLAlchemy converts a parameter of this type before the driver gets it; a tuple's
    (tuple_(a, b).in_(...)) by each element's own type."""
    types = type_.types if isinstance(type_, sa.types.TupleType) else (type_,)
    return any(each.dialect_impl(dialect).bind_processor(dialect) is not None for each in types)


def _batches(reader: pa.RecordBatchReader, dialect: sa.Dialect) -> Iterator[pa.RecordBatch]:
    """The reader's batches; a failure on a later batch (which Arrow raises as an OSError)
    raised as SQLAlchemy raises the driver's."""
    try:
        yield from reader
    except (dialect.loaded_dbapi.Error, pa.ArrowException, OSError) as exc:
        raise as_raised_by_sqlalchemy(exc, dialect) from None


def rows_of(chunk: Chunk) -> Sequence[tuple[Any, ...]]:
    """A chunk's rows as tuples: a record batch's converted column by column."""
    if isinstance(chunk, pa.RecordBatch):
        return list(zip(*map(_values, chunk.columns), strict=True))
    return chunk


def every_column(chunk: Chunk, width: int, as_iso: Collection[int] = ()) -> list[Sequence[Any]]:
    """A chunk's values column by column (`width` columns): a record batch's converted as
    `rows_of` converts them, never made rows; rows' transposed. A batch's timestamp columns at the
    positions `as_iso` come as the text `datetime.isoformat` writes of each value (`iso_texts`)
    where Arrow can write it: for a caller that stores them so."""
    if isinstance(chunk, pa.RecordBatch):
        return [
            _iso_or_values(column) if i in as_iso else _values(column)
            for i, column in enumerate(chunk.columns)
        ]
    return _transposed(chunk, width)


def _transposed(rows: Sequence[Sequence[Any]], width: int) -> list[Sequence[Any]]:
    """Rows' values column by column (`width` columns: what no rows still have)."""
    return list(zip(*rows, strict=True)) if rows else [()] * width


def _iso_or_values(column: pa.Array) -> list[Any]:
    texts = iso_texts(column)
    return _values(column) if texts is None else texts


def iso_texts(column: pa.Array) -> list[str | None] | None:
    """A timestamp column's values as the ISO 8601 text `datetime.isoformat` writes of each
    (`2026-12-05T09:00:00+00:00`, microseconds only where there are some), written by Arrow: 0.5
    us a value, against 2 us to make each a datetime and write it. None for any other column, a
    zone whose offset is not always zero, or a time near the edges of Python's range (`_values`
    then)."""
    type_ = column.type
    if not pa.types.is_timestamp(type_) or type_.unit != "us":
        return None
    if type_.tz is not None and type_.tz not in _UTC_ZONES:
        return None
    if not _within_python(column):
        return None
    import pyarrow.compute as pc  # as in _within_python: only the workers need it

    # The zone's offset is always zero: its wall times are the UTC ones, read without looking the
    # zone up in a time zone database (which Arrow finds on the system, Python in a package too).
    column = column.cast(pa.timestamp("us"))

    def digits(values: pa.Array, width: int) -> pa.Array:
        return pc.utf8_lpad(values.cast(pa.string()), width=width, padding="0")

    micros = pc.add(pc.multiply(pc.millisecond(column), 1000), pc.microsecond(column))
    fraction = pc.if_else(
        pc.equal(micros, 0), "", pc.binary_join_element_wise(".", digits(micros, 6), "")
    )
    text = pc.binary_join_element_wise(
        digits(pc.year(column), 4),
        "-",
        digits(pc.month(column), 2),
        "-",
        digits(pc.day(column), 2),
        "T",
        digits(pc.hour(column), 2),
        ":",
        digits(pc.minute(column), 2),
        ":",
        digits(pc.second(column), 2),
        fraction,
        "" if type_.tz is None else "+00:00",
        "",  # the separator
    )
    return text.to_pylist()


def _values(column: pa.Array) -> list[Any]:
    """A column's values as DuckDB's cursor gives them. Timestamps through NumPy, which makes the
    datetimes in C: Arrow's `to_pylist` takes 6.9 us a zoned one (a million consents' times, 5-7 s
    of the workers), this 1.7 us in UTC. A column holding a date or time near or past the edges of
    Python's (infinity, year 10000, before year 1) is converted by DuckDB itself, as its cursor
    converts it (Arrow and NumPy would give integers or fail)."""
    type_ = column.type
    if not (pa.types.is_timestamp(type_) or pa.types.is_date32(type_)):
        return column.to_pylist()
    if not _within_python(column):
        return _as_duckdb_converts(column)
    if pa.types.is_date32(type_) or type_.unit != "us":
        return column.to_pylist()
    # NumPy's datetimes are the UTC wall times, naive; None where the value is NULL.
    naive = column.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False).astype(object)
    if type_.tz is None:
        return naive.tolist()
    zone = _zone(type_)
    if type_.tz in _UTC_ZONES:
        return [None if v is None else v.replace(tzinfo=zone) for v in naive.tolist()]
    return [
        None if v is None else v.replace(tzinfo=dt.UTC).astimezone(zone) for v in naive.tolist()
    ]


# Python's dates and datetimes, a day inside its edges (a zone's offset moves a time across them),
# in the units Arrow stores them: days, and microseconds since the epoch.
_EPOCH = dt.datetime(1970, 1, 1)
_DAYS = ((dt.datetime.min - _EPOCH).days + 1, (dt.datetime.max - _EPOCH).days - 1)
_MICROS = (_DAYS[0] * 86_400_000_000, _DAYS[1] * 86_400_000_000)


def _within_python(column: pa.Array) -> bool:
    """Whether every date or time in the column is a day or more inside Python's range."""
    if column.null_count == len(column):
        return True
    type_ = column.type
    if pa.types.is_date32(type_):
        low, high = _DAYS
        numbers = column.view(pa.int32())
    else:
        unit = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1 / 1_000}[type_.unit]
        low, high = (bound / unit for bound in _MICROS)
        numbers = column.view(pa.int64())
    # Imported here: 40 ms that only a stage's workers need, not every process loading the code.
    import pyarrow.compute

    found = pyarrow.compute.min_max(numbers)
    return low <= found["min"].as_py() and found["max"].as_py() <= high


def _as_duckdb_converts(column: pa.Array) -> list[Any]:
    """The column's values as DuckDB's cursor gives them, in the time zone the column's own
    (the warehouse session's). Rare (edge values): duckdb is imported here, in the worker."""
    import duckdb

    with duckdb.connect() as conn:
        zone = getattr(column.type, "tz", None)
        if zone is not None:
            conn.execute("SET TimeZone = $zone", {"zone": zone})
        return [value for (value,) in conn.from_arrow(pa.table({"v": column})).fetchall()]


# Zones whose offset is always zero: their wall time is the UTC time, the zone attached.
_UTC_ZONES = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"}
)


@functools.lru_cache(maxsize=32)
def _zone(type_: pa.TimestampType) -> dt.tzinfo:
    """The tzinfo Arrow gives a value of this zoned type (DuckDB's cursor gives the same)."""
    value = pa.scalar(0, type=type_).as_py()
    assert value.tzinfo is not None
    return value.tzinfo


def columns_of(rows: Chunk | Sequence[Sequence[Any]], positions: Sequence[int]) -> list[list[Any]]:
    """The values of the columns at `positions`, column by column, from rows or a record batch."""
    if isinstance(rows, pa.RecordBatch):
        return [_values(rows.column(i)) for i in positions]
    return [[row[i] for row in rows] for i in positions]


def arrow_type(type_: sa.types.TypeEngine[Any]) -> pa.DataType | None:
    """The Arrow type a table column's values travel as (cast to the column's type on insert);
    None for a type not mapped here."""
    if isinstance(type_, sa.Boolean):
        return pa.bool_()
    if isinstance(type_, sa.Integer):
        return pa.int64()
    if isinstance(type_, sa.Float):
        return pa.float64()
    if isinstance(type_, sa.DateTime):
        return pa.timestamp("us", tz="UTC") if type_.timezone else pa.timestamp("us")
    if isinstance(type_, sa.Date):
        return pa.date32()
    if isinstance(type_, sa.String) and not isinstance(type_, sa.Enum):
        return pa.string()
    return None


@dataclass(frozen=True)
class BatchPacker:
    """Rows (sequences in the order of `columns`) packed as one record batch of `table`'s columns:
    called in a worker process, so that the batch, not the rows, travels back."""

    schema: pa.Schema

    @classmethod
    def of(cls, table: sa.Table, columns: Sequence[str]) -> BatchPacker | None:
        """The packer of these columns; None where a column's type is not mapped (arrow_type)."""
        types = [arrow_type(table.c[name].type) for name in columns]
        if any(kind is None for kind in types):
            return None
        return cls(pa.schema(list(zip(columns, types, strict=True))))

    def __call__(self, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch | Sequence[Sequence[Any]]:
        """The rows as a batch; as they are where Arrow refuses a value (a datetime for a text
        column, say), for the loader to write as it writes any rows: the engine casts them."""
        columns = _transposed(rows, len(self.schema))
        batch = self._batch(columns)
        return rows if batch is None else batch

    def columns(self, columns: Sequence[Sequence[Any]]) -> pa.RecordBatch | list[list[Any]]:
        """Columns (each a sequence of one column's values, in the schema's order) as a batch;
        as rows (`as_rows`) where Arrow refuses a value."""
        batch = self._batch(columns)
        return as_rows(columns) if batch is None else batch

    def _batch(self, columns: Sequence[Sequence[Any]]) -> pa.RecordBatch | None:
        try:
            arrays = [
                _array(values, f.type) for values, f in zip(columns, self.schema, strict=True)
            ]
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None
        return pa.record_batch(arrays, schema=self.schema)


def _array(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """A column's values as an array; one text repeated (a campaign's key, the day, the run ID) is
    repeated by Arrow, not converted value by value (3 ns a value against 28)."""
    if type(values) is list and values and type_ == pa.string():
        first = values[0]
        if (
            type(first) is str
            and values[-1] == first
            and values.count(first) == len(values)  # in C: a nanosecond a value
        ):
            return pa.repeat(pa.scalar(first, type_), len(values))
    return pa.array(values, type=type_)


def as_rows(columns: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Columns (each a sequence of one column's values) as rows: lists, which a caller may change
    (a picklable packer for a loader that takes Python rows)."""
    return [list(row) for row in zip(*columns, strict=True)]


def as_is(rows: Any) -> Any:
    """Rows left as they are, for a loader that takes Python rows (a picklable packer)."""
    return rows
