"""A SQLite source read as Arrow batches by ADBC's SQLite driver, in C, to the same values as its rows.

SQLite has storage classes, not column types: ADBC infers each batch column's Arrow type from
the values in it, turns a mixed column into text within a batch, fails on a mismatch across
batches, and turns text in a column it inferred as REAL into a float (silently rounding an exact
decimal kept as text). A column NULL throughout the first batch is fixed as int64 for the
whole stream, so the query starts with one marker row whose values have each column's storage
class, dropped here. Every column whose values SQLAlchemy would parse from text (decimals,
dates, times, timestamps, text itself) is read as `CAST(... AS TEXT)` and converted here,
vectorised for the canonical forms; the rare value in another form goes through the very
function SQLAlchemy's row path uses (`Decimal`, `fromisoformat`), so both paths agree on every
value, and a value neither reads is a DataError naming the table, column and value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
import sqlalchemy as sa

from sync_assets.batches import cast_batch
from sync_assets.errors import DataError

# SQLAlchemy's SQLite storage forms (DATETIME_FORMAT and friends in dialects/sqlite.py), which
# polars parses exactly as `fromisoformat` does.
_CANONICAL: dict[type[pl.DataType], tuple[str, str]] = {
    pl.Datetime: (r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?$", "%Y-%m-%d %H:%M:%S%.f"),
    pl.Date: (r"^\d{4}-\d{2}-\d{2}$", "%Y-%m-%d"),
    pl.Time: (r"^\d{2}:\d{2}:\d{2}(\.\d{1,6})?$", "%H:%M:%S%.f"),
}
_PARSERS: dict[type[pl.DataType], Callable[[str], Any]] = {
    pl.Datetime: dt.datetime.fromisoformat,
    pl.Date: dt.date.fromisoformat,
    pl.Time: dt.time.fromisoformat,
}
# The driver's message for a column whose storage class changed between two batches.
_MISMATCH = re.compile(r"Type mismatch in column (\d+)")
_MARKER = "_sync_marker"
BUSY_TIMEOUT_MS = 300_000  # as the SQLAlchemy connections wait for a writer (sqlite.BUSY_TIMEOUT_SECONDS)


def read_as_text(dtype: pl.DataType) -> bool:
    """Whether a column of `dtype` is read as text and converted here."""
    return dtype == pl.String or isinstance(dtype, (pl.Decimal, pl.Datetime)) or dtype in (pl.Date, pl.Time)


def stream_query(statement: sa.Select[Any], schema: dict[str, pl.DataType]) -> sa.CompoundSelect:
    """The marker row, then `statement`'s rows with the text columns read as text; a first
    column `_MARKER` tells them apart."""
    rows = statement.subquery("rows")
    marker = [sa.literal(1).label(_MARKER)]
    data = [sa.literal(0).label(_MARKER)]
    for name, dtype in schema.items():
        column = rows.c[name]
        if read_as_text(dtype):
            marker.append(sa.literal("", sa.Text).label(name))
            data.append(sa.cast(column, sa.Text).label(name))
        elif dtype == pl.Binary:
            marker.append(sa.func.zeroblob(0).label(name))
            data.append(column.label(name))
        else:  # integers and booleans as INTEGER, floats as REAL
            marker.append(sa.literal(0.5 if dtype.is_float() else 0).label(name))
            data.append(column.label(name))
    return sa.union_all(sa.select(*marker), sa.select(*data).select_from(rows))


def batches(
    path: str, query: str, *, schema: dict[str, pl.DataType], table: str, batch_size: int
) -> Iterator[pl.DataFrame]:
    """The rows of `query` (already rendered, literals bound) from the database file at `path`."""
    import adbc_driver_sqlite.dbapi as adbc

    names = [_MARKER, *schema]
    with adbc.connect(path) as connection, connection.cursor() as cursor:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_size)})
        cursor.execute(query)
        # The cursor must outlive its reader: a collected cursor closes the stream.
        reader = cursor.fetch_record_batch()
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except OSError as err:
                raise _mismatch(err, names, table) from err
            frame = pl.from_arrow(batch)
            frame = frame.filter(pl.col(_MARKER) == 0).drop(_MARKER)  # type: ignore[union-attr]
            if frame.height:
                yield typed(frame, schema, table=table)


def typed(frame: pl.DataFrame, schema: dict[str, pl.DataType], *, table: str) -> pl.DataFrame:
    """A batch as read in the batch schema: text parsed, numbers cast (widths checked)."""
    converted = [
        _from_text(frame.get_column(name), dtype, table=table) if read_as_text(dtype) else None
        for name, dtype in schema.items()
    ]
    frame = frame.with_columns([c for c in converted if c is not None])
    return cast_batch(frame, schema, table=table)


def _from_text(column: pl.Series, dtype: pl.DataType, *, table: str) -> pl.Series:
    if column.null_count() == column.len():
        return pl.Series(column.name, [None] * column.len(), dtype=dtype)
    if dtype == pl.String:
        return column.cast(pl.String)
    kind = type(dtype)
    canonical = _CANONICAL.get(kind)
    if canonical is not None:
        pattern, fmt = canonical
        plain = column.str.contains(pattern)
        parsed = column.str.strptime(dtype, fmt, strict=False).alias(column.name)  # type: ignore[arg-type]
        odd = column.is_not_null() & (~plain.fill_null(True) | parsed.is_null())
    else:  # a decimal: polars' text cast is exact for plain digits within the scale
        scale = dtype.scale or 0  # type: ignore[attr-defined]
        plain = column.str.contains(rf"^-?\d+(\.\d{{1,{scale}}})?$" if scale else r"^-?\d+$")
        parsed = column.cast(dtype, strict=False)
        odd = column.is_not_null() & (~plain.fill_null(True) | parsed.is_null())
    if not odd.any():
        return parsed
    return _per_value(column, parsed, odd, dtype, table=table)


def _per_value(
    column: pl.Series, parsed: pl.Series, odd: pl.Series, dtype: pl.DataType, *, table: str
) -> pl.Series:
    """The values in another form, read one by one as SQLAlchemy's row path reads them."""
    parse = _PARSERS.get(type(dtype)) or _decimal_parser(dtype)
    values = parsed.to_list()
    for i in odd.arg_true().to_list():
        text = column[i]
        try:
            values[i] = parse(text)
        except (ValueError, ArithmeticError):
            shown = repr(text)[:80]
            msg = f"table '{table}': column '{column.name}': source value {shown} cannot be read as {dtype}"
            raise DataError(msg, table=table) from None
    try:
        return pl.Series(column.name, values, dtype=dtype, strict=True)
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError) as err:
        msg = f"table '{table}': column '{column.name}': source values cannot be read as {dtype}"
        raise DataError(msg, table=table) from err


def _decimal_parser(dtype: pl.DataType) -> Callable[[str], decimal.Decimal]:
    """SQLAlchemy's reading of a SQLite REAL in a decimal column (`"%.<scale>f" % value`), from
    the text SQLite gives of it (which reads back to the same float)."""
    fmt = f"%.{dtype.scale or 0}f"  # type: ignore[attr-defined]
    return lambda text: decimal.Decimal(fmt % float(text))


def _mismatch(err: OSError, names: list[str], table: str) -> Exception:
    """A column whose values changed storage class between batches, named; other errors as they are."""
    match = _MISMATCH.search(str(err))
    if match is None or int(match[1]) >= len(names):
        return err
    name = names[int(match[1])]
    msg = (
        f"table '{table}': column '{name}': the source holds values of another type in this column "
        f"({err}); a SQLite column must hold one type to be synced"
    )
    return DataError(msg, table=table)
