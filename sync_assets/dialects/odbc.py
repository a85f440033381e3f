"""Bulk inserts through pyodbc: polars batches become typed parameter arrays (`fast_executemany`).

pyodbc guesses each parameter's SQL type from the first row unless told, so a NULL or a short
first value would pick the wrong type or size; `input_sizes` states every column's type from the
batch's dtypes and the cache column types instead. Values that pyodbc cannot bind exactly (more
than microseconds, fractional seconds of a TIME, zoned timestamps) travel as ISO text that the
server converts on insert. pyodbc itself is imported by the callers, not here, so this module
works without unixODBC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

import polars as pl
import sqlalchemy as sa

# ODBC SQL type codes, fixed by the ODBC standard (sql.h / sqlext.h;
# https://learn.microsoft.com/en-us/sql/odbc/reference/appendixes/sql-data-types).
SQL_BIT: Final = -7
SQL_SMALLINT: Final = 5
SQL_INTEGER: Final = 4
SQL_BIGINT: Final = -5
SQL_DECIMAL: Final = 3
SQL_DOUBLE: Final = 8
SQL_TYPE_DATE: Final = 91
SQL_TYPE_TIMESTAMP: Final = 93
SQL_WVARCHAR: Final = -9
SQL_VARBINARY: Final = -3

# fast_executemany allocates one buffer of (rows x row width) per call: both stay bounded.
MAX_ROWS_PER_CALL: Final = 10_000
MAX_BYTES_PER_CALL: Final = 64 * 2**20
DEFAULT_FRACTIONAL_DIGITS: Final = 6
_INTEGERS: Final = {
    pl.Int8: SQL_SMALLINT,
    pl.UInt8: SQL_SMALLINT,
    pl.Int16: SQL_SMALLINT,
    pl.UInt16: SQL_INTEGER,
    pl.Int32: SQL_INTEGER,
    pl.UInt32: SQL_BIGINT,
    pl.Int64: SQL_BIGINT,
}


class InputSize(NamedTuple):
    """One entry of `cursor.setinputsizes()`: SQL type, column size, decimal digits."""

    sql_type: int
    size: int
    digits: int = 0


def fractional_digits(type_: sa.types.TypeEngine[Any] | None) -> int:
    """Sub-second digits a timestamp/time column keeps (DATETIME2(7): 7; unknown: microseconds)."""
    precision = getattr(type_, "precision", None)
    return precision if isinstance(precision, int) else DEFAULT_FRACTIONAL_DIGITS


def to_parameters(frame: pl.DataFrame, types: Mapping[str, sa.types.TypeEngine[Any]]) -> pl.DataFrame:
    """Cast a batch, vectorised, to values pyodbc binds exactly: Decimal, datetime, or ISO text.

    `types` are the cache column types, which say how many fractional digits to send.
    """
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        digits = fractional_digits(types.get(name))
        if isinstance(dtype, pl.Datetime) and (dtype.time_zone or dtype.time_unit == "ns"):
            # pyodbc binds datetime objects with microseconds and drops their time zone.
            text = col.dt.strftime("%Y-%m-%dT%H:%M:%S.%9f").str.slice(0, 20 + digits if digits else 19)
            if dtype.time_zone:
                text = pl.concat_str(text, col.dt.strftime("%:z"))
            exprs.append(text.alias(name))
        elif isinstance(dtype, pl.Datetime) and dtype.time_unit == "ms":
            exprs.append(col.cast(pl.Datetime("us")))
        elif dtype == pl.Time:
            # ODBC's TIME_STRUCT has no fraction: pyodbc would send whole seconds.
            exprs.append(col.dt.strftime("%H:%M:%S.%9f").str.slice(0, 9 + digits if digits else 8))
        elif isinstance(dtype, pl.Categorical | pl.Enum) or dtype == pl.Null:
            exprs.append(col.cast(pl.String))
        else:
            exprs.append(col)
    return frame.select(exprs)


def input_sizes(values: pl.DataFrame, types: Mapping[str, sa.types.TypeEngine[Any]]) -> list[InputSize]:
    """The `setinputsizes()` list for a batch made by `to_parameters`, one entry per column.

    Text and binary sizes are the longest value of the batch (UTF-8 bytes, never fewer than the
    UTF-16 code units ODBC counts): a zero size would mean data-at-execution, which psqlODBC
    does not survive under fast_executemany (it crashes the process).
    """
    sizes = []
    for name, dtype in values.schema.items():
        col = values.get_column(name)
        if dtype in _INTEGERS:
            sizes.append(InputSize(_INTEGERS[dtype], 0))
        elif isinstance(dtype, pl.Decimal):
            sizes.append(InputSize(SQL_DECIMAL, dtype.precision or 38, dtype.scale))
        elif dtype.is_float():
            sizes.append(InputSize(SQL_DOUBLE, 0))
        elif dtype == pl.Boolean:
            sizes.append(InputSize(SQL_BIT, 0))
        elif dtype == pl.Date:
            sizes.append(InputSize(SQL_TYPE_DATE, 10))
        elif isinstance(dtype, pl.Datetime):
            digits = min(fractional_digits(types.get(name)), 7)
            sizes.append(InputSize(SQL_TYPE_TIMESTAMP, 20 + digits if digits else 19, digits))
        elif dtype == pl.String:
            sizes.append(InputSize(SQL_WVARCHAR, max(col.str.len_bytes().max() or 0, 1)))  # type: ignore[arg-type]
        elif dtype == pl.Binary:
            sizes.append(InputSize(SQL_VARBINARY, max(col.bin.size().max() or 0, 1)))  # type: ignore[arg-type]
        else:
            msg = f"column '{name}': no ODBC parameter type for polars {dtype}"
            raise TypeError(msg)
    return sizes


def rows_per_call(sizes: Sequence[InputSize], *, max_rows: int, max_bytes: int) -> int:
    """How many rows one fast_executemany call may bind within `max_bytes` of parameter buffers."""
    width = 0
    for size in sizes:
        if size.sql_type == SQL_WVARCHAR:
            width += (size.size + 1) * 2  # SQLWCHAR buffer with its terminator
        elif size.sql_type == SQL_VARBINARY:
            width += size.size
        else:
            width += 40  # numeric struct, timestamp struct or a scalar
        width += 8  # length/indicator
    return max(1, min(max_rows, max_bytes // width))


def executemany(
    cursor: Any,
    statement: str,
    frame: pl.DataFrame,
    types: Mapping[str, sa.types.TypeEngine[Any]],
    *,
    max_rows: int = MAX_ROWS_PER_CALL,
    max_bytes: int = MAX_BYTES_PER_CALL,
) -> int:
    """Insert `frame` with `statement` (qmark parameters in frame column order); returns the row count.

    Runs on the caller's pyodbc cursor and transaction; the caller closes the cursor.
    """
    if frame.is_empty():
        return 0
    values = to_parameters(frame, types)
    sizes = input_sizes(values, types)
    step = rows_per_call(sizes, max_rows=max_rows, max_bytes=max_bytes)
    cursor.fast_executemany = True
    for chunk in values.iter_slices(step):
        cursor.setinputsizes([tuple(size) for size in sizes])
        cursor.executemany(statement, chunk.rows())
    return values.height


# Retryable SQLSTATEs (https://learn.microsoft.com/en-us/sql/odbc/reference/appendixes/
# appendix-a-odbc-error-codes): class 08 connection errors, HYT00/HYT01 timeouts, 40001
# serialization failure or deadlock victim.
TRANSIENT_STATE_CLASSES: Final = ("08",)
TRANSIENT_STATES: Final = frozenset({"HYT00", "HYT01", "40001"})
# 28000, invalid authorization specification: a refused login (same appendix).
PERMANENT_STATES: Final = frozenset({"28000"})
# pyodbc carries the driver's native error number only in its message: "... (1205) (SQLExecDirectW)".
_NATIVE_NUMBER = re.compile(r"\((-?\d+)\)(?=\s*\(SQL\w*\)|;|$)")
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")


# arrow-odbc's errors are one message of its diagnostic records: "State: 08001, Native error: 101, ...".
_ARROW_ODBC_RECORD = re.compile(r"State: ([0-9A-Z]{5}), Native error: (-?\d+)")


def odbc_diagnostics(error: BaseException) -> tuple[str, frozenset[int]] | None:
    """SQLSTATE and native error numbers (SQL Server, ASE, FreeTDS) of a pyodbc error, whose `args`
    are (SQLSTATE, message), or of an arrow-odbc error (its first record's state, every record's
    number); None for any other error."""
    if type(error).__module__.startswith("arrow_odbc"):
        records = _ARROW_ODBC_RECORD.findall(str(error))
        if not records:
            return None
        return records[0][0], frozenset(int(number) for _, number in records)
    args = getattr(error, "args", ())
    if len(args) < 2 or not isinstance(args[0], str) or not _SQLSTATE.fullmatch(args[0]):
        return None
    message = args[1] if isinstance(args[1], str) else ""
    return args[0], frozenset(int(n) for n in _NATIVE_NUMBER.findall(message))


def is_transient_error(error: BaseException, transient_numbers: frozenset[int]) -> bool | None:
    """Whether a pyodbc error clears up by itself, by SQLSTATE or by one of the vendor's
    `transient_numbers`; None when `error` is neither a pyodbc nor an arrow-odbc error. Call
    `is_permanent_error` first."""
    diagnostics = odbc_diagnostics(error)
    if diagnostics is None:
        return None
    state, numbers = diagnostics
    return (
        state.startswith(TRANSIENT_STATE_CLASSES)
        or state in TRANSIENT_STATES
        or not numbers.isdisjoint(transient_numbers)
    )


def is_permanent_error(
    error: BaseException, permanent_numbers: frozenset[int], transient_numbers: frozenset[int]
) -> bool:
    """A refused login or permission, by SQLSTATE 28000 or one of the vendor's `permanent_numbers`,
    whatever SQLSTATE the driver reports it under (FreeTDS: 08001, "Unable to connect"). A vendor
    number that clears up wins: Azure SQL sends 40613 (database not currently available) together
    with 18456 (login failed)."""
    diagnostics = odbc_diagnostics(error)
    if diagnostics is None:
        return False
    state, numbers = diagnostics
    if not numbers.isdisjoint(transient_numbers):
        return False
    return state in PERMANENT_STATES or not numbers.isdisjoint(permanent_numbers)
