"""A SQL Server source read as Arrow batches by Microsoft's mssql-python driver, in C.

mssql-python (`mssql+mssqlpython://`) fetches a result set straight into Arrow arrays
(`cursor.arrow_reader`), on a connection of its own so the next batch can be read while the
cache loads the last one. What it delivers, and what is done here to give the row path's values:

- DATETIME2/DATETIME/SMALLDATETIME as timestamp[us] (a seventh digit is not read, as with
  pyodbc), DATETIMEOFFSET as timestamp[us, +00:00]: the UTC instant, the offset not kept.
- TIME as time64[ns]: truncated here to the microseconds the source declares (`READ_DIGITS`).
- UNIQUEIDENTIFIER as 36-character upper-case text: read as itself (not through the NVARCHAR(max)
  text cast the row path uses, which would make the fetch one row at a time) and lowercased.
- TINYINT as uint8, REAL as float32, DECIMAL(p,s) as decimal128(p,s): cast exactly to the batch
  schema, a value that does not fit failing the sync naming table, column and value.
- MONEY, SMALLMONEY, TEXT, NTEXT and IMAGE are read as the DECIMAL, (N)VARCHAR(max) and
  VARBINARY(max) they convert to exactly, types the driver's Arrow fetch is known to handle.

The driver refuses other types when the result set is described; a statement with a column it
would refuse, or whose schema dtype it would not deliver exactly, is left to the row path
(`read_statement` returns None), decided before anything is read.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any, Final

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import mssql
from sqlalchemy.sql import sqltypes

from sync_assets.batches import typed_batch

DRIVER_MODULE: Final = "mssql_python"
# Source types the driver's Arrow fetch has no conversion for, read as the type each converts to
# exactly (https://learn.microsoft.com/en-us/sql/t-sql/data-types/data-type-conversion-database-engine).
_READ_AS: Final[list[tuple[type[sa.types.TypeEngine[Any]], Callable[[], sa.types.TypeEngine[Any]]]]] = [
    (mssql.MONEY, lambda: sa.DECIMAL(19, 4)),
    (mssql.SMALLMONEY, lambda: sa.DECIMAL(10, 4)),
    (mssql.NTEXT, lambda: mssql.NVARCHAR(None)),
    (mssql.TEXT, lambda: mssql.VARCHAR(None)),
    (mssql.IMAGE, lambda: mssql.VARBINARY(None)),
]


def uses_driver(conn: sa.Connection) -> bool:
    """Whether `conn` talks to SQL Server through mssql-python (pyodbc has no Arrow reader)."""
    return type(conn.connection.driver_connection).__module__.startswith(DRIVER_MODULE)


def arrow_batches(
    source: sa.Connection,
    statement: sa.Select[Any],
    *,
    schema: dict[str, pl.DataType],
    table: str,
    batch_size: int,
) -> Iterator[pl.DataFrame] | None:
    """The rows of `statement` read by the driver on a pooled connection of its own, in batches of
    at most `batch_size` rows cast to `schema`; None where a column must go through rows."""
    read = read_statement(statement, schema)
    if read is None:
        return None
    query, uuids = read
    # IN lists (the keys of a hash incremental) as one parameter per value.
    compiled = query.compile(dialect=source.dialect, compile_kwargs={"render_postcompile": True})
    return batches(
        source.engine.raw_connection,
        compiled.string,
        compiled.construct_params(),
        schema=schema,
        uuids=uuids,
        table=table,
        batch_size=batch_size,
    )


def read_statement(
    statement: sa.Select[Any], schema: dict[str, pl.DataType]
) -> tuple[sa.Select[Any], frozenset[str]] | None:
    """`statement` with each column read as a type the driver delivers exactly, and the names of
    the columns read as the driver's UUID text; None if a column has no such type."""
    columns: list[sa.ColumnElement[Any]] = []
    uuids: set[str] = set()
    for column in statement.selected_columns:
        name = column.key
        if not isinstance(column, sa.Label) or name not in schema:
            return None
        element = _uuid_read(column.element)
        if element is not None:
            uuids.add(name)
        else:
            element = _read_as(column.element)
        delivered = driver_dtype(element.type)
        if delivered is None or not exact(delivered, schema[name]):
            return None
        columns.append(element.label(name))
    if [c.key for c in columns] != list(schema):
        return None
    return statement.with_only_columns(*columns, maintain_column_froms=True), frozenset(uuids)


def driver_dtype(type_: sa.types.TypeEngine[Any]) -> pl.DataType | None:
    """The polars dtype of the Arrow column the driver makes of a column of `type_`; None for a
    type its Arrow fetch refuses (SQL_VARIANT, spatial types, an untyped query column)."""
    match type_:
        case sqltypes.Boolean():
            return pl.Boolean()
        case mssql.TINYINT():
            return pl.UInt8()
        case sqltypes.SmallInteger():
            return pl.Int16()
        case sqltypes.BigInteger():
            return pl.Int64()
        case sqltypes.Integer():
            return pl.Int32()
        case mssql.REAL():
            return pl.Float32()
        case sqltypes.Float():
            return pl.Float64()
        case sqltypes.Numeric(precision=int(precision), scale=scale):
            return pl.Decimal(precision, scale or 0)
        case mssql.DATETIMEOFFSET():
            return pl.Datetime("us", "UTC")
        case sqltypes.DateTime():
            return pl.Datetime("us")
        case sqltypes.Date():
            return pl.Date()
        case sqltypes.Time():
            return pl.Time()
        case mssql.NTEXT() | mssql.TEXT() | mssql.IMAGE():
            return None  # read as (N)VARCHAR(max) and VARBINARY(max) instead (`_READ_AS`)
        case sqltypes.Uuid() | sqltypes.String():  # XML included
            return pl.String()
        case sqltypes._Binary():  # ROWVERSION included
            return pl.Binary()
    return None


def exact(delivered: pl.DataType, wanted: pl.DataType) -> bool:
    """Whether the driver's `delivered` dtype casts to `wanted` without changing a value (integer
    widths are range-checked by the cast: a value out of range fails, never wraps)."""
    if delivered.is_integer():
        return wanted.is_integer()
    if delivered.is_float():
        return wanted.is_float()
    if isinstance(delivered, pl.Datetime):
        return isinstance(wanted, pl.Datetime) and (delivered.time_zone is None) == (wanted.time_zone is None)
    if isinstance(delivered, pl.Decimal):
        return isinstance(wanted, pl.Decimal)
    return delivered == wanted


def batches(
    connect: Callable[[], Any],
    query: str,
    parameters: dict[str, Any],
    *,
    schema: dict[str, pl.DataType],
    uuids: Collection[str],
    table: str,
    batch_size: int,
) -> Iterator[pl.DataFrame]:
    """The rows of `query` on a DB-API connection from `connect`, which is opened on the first
    batch and closed (the reader's statement cancelled first) when the batches end, fail, are
    closed early or are collected."""
    connection = connect()
    try:
        cursor = connection.cursor()
        # A dict even when empty: the driver then turns pyformat into qmark and %% into %.
        cursor.execute(query, parameters)
        reader = cursor.arrow_reader(batch_size)
        try:
            for batch in reader:
                if batch.num_rows:
                    yield typed_batch(pl.from_arrow(batch), schema, uuids=uuids, table=table)  # type: ignore[arg-type]
        finally:
            reader.close()
            cursor.close()
    finally:
        connection.close()


def _uuid_read(element: sa.ColumnElement[Any]) -> sa.ColumnElement[Any] | None:
    """The UNIQUEIDENTIFIER column under the row path's text cast, read as itself; None otherwise."""
    if isinstance(element, sa.Cast) and isinstance(element.clause.type, sqltypes.Uuid):
        return element.clause  # type: ignore[return-value]
    if isinstance(element.type, sqltypes.Uuid):
        return element
    return None


def _read_as(element: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    for source_type, read_type in _READ_AS:
        if isinstance(element.type, source_type):
            return sa.cast(element, read_type())
    return element
