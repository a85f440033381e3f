"""Bounded polars batches: read from a cursor, cast to the batch schema, mapped. Memory is one
batch, whatever the table size."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from typing import Any, Final

import polars as pl
import sqlalchemy as sa

from sync_assets.errors import DataError

# The digits a row read keeps: a TIME(7)'s seventh digit is dropped, as pyodbc does.
_NANOSECONDS_PER_MICROSECOND: Final = 1000


def read_batches(
    conn: sa.Connection,
    statement: sa.Select[Any],
    *,
    schema: dict[str, pl.DataType] | None,
    batch_size: int,
    table: str,
) -> Generator[pl.DataFrame]:
    """Stream `statement` in frames of at most `batch_size` rows.

    `yield_per` makes drivers with client-side cursors (psycopg) use a server-side one. With no
    schema (a query source), the first batch's inferred types fix the schema of the rest.
    """
    result = conn.execution_options(yield_per=batch_size).execute(statement)
    names = list(result.keys())
    try:
        for rows in result.partitions():
            frame = to_frame(rows, names, schema, table=table)
            schema = schema or dict(frame.schema)
            yield frame
    finally:
        result.close()


def to_frame(
    rows: Sequence[Sequence[Any]], names: list[str], schema: dict[str, pl.DataType] | None, *, table: str
) -> pl.DataFrame:
    try:
        return pl.DataFrame(rows, schema=schema or names, orient="row", infer_schema_length=None)
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError) as err:
        raise _explain(rows, names, schema, table) from err


def _explain(
    rows: Sequence[Sequence[Any]], names: list[str], schema: dict[str, pl.DataType] | None, table: str
) -> DataError:
    """Find the column and value a batch failed on, so the error can name them."""
    for i, name in enumerate(names):
        dtype = schema[name] if schema else None
        values = [row[i] for row in rows]
        try:
            pl.Series(name, values, dtype=dtype, strict=True)
        except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError):
            bad = next((v for v in values if not _fits(v, dtype)), None)
            shown = repr(bad)[:80]
            msg = f"table '{table}': column '{name}': source value {shown} cannot be read as {dtype}"
            return DataError(msg, table=table)
    msg = f"table '{table}': a batch of {len(rows)} rows could not be converted"
    return DataError(msg, table=table)


def _fits(value: Any, dtype: pl.DataType | None) -> bool:
    try:
        pl.Series([value], dtype=dtype, strict=True)
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError):
        return False
    return True


def cast_batch(frame: pl.DataFrame, schema: dict[str, pl.DataType], *, table: str) -> pl.DataFrame:
    """A driver's Arrow batch in the batch schema (widths, exact decimals), naming a column that fails."""
    try:
        return frame.cast(schema)  # type: ignore[arg-type]
    except (pl.exceptions.PolarsError, TypeError, ValueError) as err:
        for name, dtype in schema.items():
            try:
                frame.get_column(name).cast(dtype)
            except (pl.exceptions.PolarsError, TypeError, ValueError):
                msg = f"table '{table}': column '{name}': source values cannot be read as {dtype}"
                raise DataError(msg, table=table) from err
        raise


def typed_batch(
    frame: pl.DataFrame, schema: dict[str, pl.DataType], *, uuids: Collection[str], table: str
) -> pl.DataFrame:
    """A batch as a driver's Arrow reader made it, in the batch schema: UUIDs lowercased (drivers
    hand SQL_GUID over upper-case), times to microseconds, every column cast exactly (a value
    that does not fit is a DataError naming it)."""
    fixes = [pl.col(name).str.to_lowercase() for name in uuids]
    fixes += [
        (pl.col(name).cast(pl.Int64) // _NANOSECONDS_PER_MICROSECOND * _NANOSECONDS_PER_MICROSECOND).cast(
            pl.Time
        )
        for name, dtype in schema.items()
        if dtype == pl.Time
    ]
    frame = frame.with_columns(fixes).select(list(schema))
    try:
        return cast_batch(frame, schema, table=table)
    except DataError as err:
        named = _naming_the_value(frame, schema, table)
        if named is None:
            raise
        raise named from err


def _naming_the_value(frame: pl.DataFrame, schema: dict[str, pl.DataType], table: str) -> DataError | None:
    """The error of the first value that does not fit its column, naming it."""
    for name, dtype in schema.items():
        column = frame.get_column(name)
        lost = column.is_not_null() & column.cast(dtype, strict=False).is_null()
        if lost.any():
            shown = repr(column.filter(lost)[0])[:80]
            msg = f"table '{table}': column '{name}': source value {shown} cannot be read as {dtype}"
            return DataError(msg, table=table)
    return None


def mapped(
    batches: Iterator[pl.DataFrame], change: Callable[[pl.DataFrame], pl.DataFrame]
) -> Generator[pl.DataFrame]:
    """Each batch passed through `change`; closing this closes the reader underneath."""
    try:
        for frame in batches:
            yield change(frame)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


_END = object()


def read_ahead(batches: Iterator[pl.DataFrame], *, depth: int = 1) -> Generator[pl.DataFrame]:
    """`batches` read on a thread, `depth` batches ahead of the consumer: the next batch is read
    while the last one loads, memory bounded by depth + 2 batches.

    Only for readers that own their connection (a driver's Arrow reader), and that release the
    GIL while they read. A consumer that stops early (an error, a cancellation) does not wait for
    the batch being read: the thread closes the reader once that read returns.
    """
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for frame in batches:
                if not hand_over(frame):
                    return
            hand_over(_END)
        except BaseException as err:  # handed to the consumer
            hand_over(err)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="sync_assets read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
