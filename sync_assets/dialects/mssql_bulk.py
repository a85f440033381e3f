"""Full loads into a SQL Server cache through TDS bulk copy (`mssql-python`'s `bulkcopy_arrow`).

The driver streams Arrow buffers straight into bulk-load packets, on a connection it opens for
the call and commits itself: it cannot write inside the sync's transaction, and cannot see its
#temp tables. So a full load fills a committed heap, `<table>__sync_new`, with one streamed call
(TABLOCK: minimally logged), and the commit replaces the target's rows from it in one
transaction: DELETE under one table lock, then INSERT ... SELECT with TABLOCK, whose key check
fails the commit on a duplicate. The target keeps its identity (grants, triggers, views).
An incremental of several batches fills the same heap, which the commit's MERGE reads and the
clean-up after it drops; one batch still stages in #temp through the session's own connection.

Only the mssql-python driver (`mssql+mssqlpython://`) has this path; pyodbc keeps
fast_executemany inside the transaction.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Final

import polars as pl
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mssql
from sqlalchemy.sql import sqltypes

# 0: the whole stream is one bulk batch, and no client-side limit cuts a long load short (the
# server's own lock and log limits still hold).
WHOLE_STREAM: Final = 0
NO_TIMEOUT: Final = 0


def arrow_type(type_: sa.types.TypeEngine[Any]) -> pa.DataType:
    """The Arrow type the bulk writer pairs with a cache column (mssql-py-core's
    `resolve_kind`): used for a batch column polars left untyped (all NULL)."""
    if isinstance(type_, mssql.DATETIMEOFFSET):
        return pa.timestamp("us", tz="UTC")
    if isinstance(type_, mssql.TIME):
        return pa.time64("ns")
    if isinstance(type_, mssql.BIT | sqltypes.Boolean):
        return pa.bool_()
    if isinstance(type_, mssql.UNIQUEIDENTIFIER | sqltypes.String):
        return pa.large_string()
    if isinstance(type_, sqltypes._Binary):
        return pa.large_binary()
    if isinstance(type_, sqltypes.Float):
        return pa.float64()
    if isinstance(type_, sqltypes.Numeric):
        return pa.decimal128(type_.precision or 38, type_.scale or 0)
    if isinstance(type_, sqltypes.BigInteger):
        return pa.int64()
    if isinstance(type_, sqltypes.SmallInteger):
        return pa.int16()
    if isinstance(type_, sqltypes.Integer):
        return pa.int32()
    if isinstance(type_, sqltypes.DateTime):
        return pa.timestamp("us")
    if isinstance(type_, sqltypes.Date):
        return pa.date32()
    msg = f"no Arrow type for the bulk copy of a {type_!r} column"
    raise TypeError(msg)


def record_batches(
    dest: sa.Table, names: list[str], frames: Iterator[pl.DataFrame]
) -> Iterator[pa.RecordBatch]:
    """The batches' `names` columns as Arrow record batches of one schema: plain (not view)
    strings and binaries, and untyped (all-NULL) columns given the cache column's type."""
    schema: pa.Schema | None = None
    for frame in frames:
        table = frame.select(names).to_arrow(compat_level=pl.CompatLevel.oldest())
        if schema is None:
            schema = pa.schema(
                [
                    pa.field(f.name, arrow_type(dest.c[f.name].type)) if pa.types.is_null(f.type) else f
                    for f in table.schema
                ]
            )
        yield from table.cast(schema).to_batches()


def copy(raw_connection: Any, dest: sa.Table, frames: Iterator[pl.DataFrame], *, table_name: str) -> int:
    """Stream `frames` into `dest` in one bulk copy; returns the rows the driver sent (0 when
    there is no batch: no connection is opened).

    `table_name` is `dest` as SQL Server names it (schema-qualified and quoted by the dialect).
    Columns map by name: a batch carries the cache columns it has, in any order.
    """
    first = next(frames, None)
    if first is None:
        return 0
    names = [c.name for c in dest.columns if c.name in first.columns]
    cursor = raw_connection.cursor()
    try:
        result = cursor.bulkcopy_arrow(
            table_name,
            record_batches(dest, names, itertools.chain([first], frames)),
            batch_size=WHOLE_STREAM,
            timeout=NO_TIMEOUT,
            column_mappings=names,
            table_lock=True,
            keep_nulls=True,
        )
    finally:
        cursor.close()
    return int(result.get("rows_copied", 0))
