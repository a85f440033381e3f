"""One 32-bit hash of a source row, computed by the source database itself.

`change_detection: hash` stores it with every cached row and compares sums of it per key range:
the cache never computes a hash, so source and cache may be different engines. Each database
compiles `RowHash` with `@compiles` from its own functions; NULL and empty text hash differently
wherever the database tells them apart (Oracle and Sybase do not).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, oracle, postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

SEPARATOR = 31  # ASCII unit separator, between the values of a row
BUCKETS = 2**32  # the hashes combined per column stay below this
SQLITE_FUNCTION = "sync_row_hash"


class RowHash(FunctionElement[int]):
    """hash(row) as an integer below 2**32 in absolute value; its sum over a key range is exact."""

    type = sa.BigInteger()
    name = "row_hash"
    inherit_cache = True


class Convert(sa.sql.expression.ColumnElement[str]):
    """CONVERT(type, value, style) of SQL Server and Sybase: text in a stated format."""

    inherit_cache = True

    def __init__(self, type_: sa.types.TypeEngine[Any], value: sa.ColumnElement[Any], style: int) -> None:
        self.type = type_
        self.value = value
        self.style = style


@compiles(Convert)
def _convert(element: Convert, compiler: SQLCompiler, **kw: Any) -> str:
    target = compiler.dialect.type_compiler_instance.process(element.type)
    return f"CONVERT({target}, {compiler.process(element.value, **kw)}, {int(element.style)})"


Text = Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]]


def _values(
    element: RowHash, text: sa.types.TypeEngine[Any], as_text: Text | None = None
) -> list[sa.ColumnElement[Any]]:
    """'v' + value as text, or 'n' for NULL: the parts hashed, in column order."""
    convert = as_text or (lambda column: sa.cast(column, text))
    return [
        sa.func.coalesce(sa.literal("v", text) + convert(column), sa.literal("n", text))
        for column in element.clauses
    ]


def _joined(
    parts: list[sa.ColumnElement[Any]], separator: sa.ColumnElement[Any] | None
) -> sa.ColumnElement[Any]:
    """parts[0] + separator + parts[1] ...; without a separator, a plain sum (or concatenation)."""
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + part if separator is None else joined + separator + part
    return joined


@compiles(RowHash)
def _unsupported(element: RowHash, compiler: SQLCompiler, **kw: Any) -> str:
    if compiler.dialect.name == "default":  # str(), and SQLAlchemy's own introspection of a SELECT
        return compiler.visit_function(element, **kw)
    msg = f"no row hash for the {compiler.dialect.name} dialect"
    raise sa.exc.CompileError(msg)


@compiles(RowHash, "postgresql")
def _postgresql(element: RowHash, compiler: SQLCompiler, **kw: Any) -> str:
    # The first 32 bits of the MD5, read as an unsigned number ('x...'::bit(32)::bigint).
    text = sa.func.concat_ws(sa.func.chr(SEPARATOR), *_values(element, sa.Text()))
    prefix = sa.literal("x", sa.Text()) + sa.func.substr(sa.func.md5(text), 1, 8)
    return compiler.process(sa.cast(sa.cast(prefix, postgresql.BIT(32)), sa.BigInteger()), **kw)


@compiles(RowHash, "duckdb")
def _duckdb(element: RowHash, compiler: SQLCompiler, **kw: Any) -> str:
    text = sa.func.concat_ws(sa.func.chr(SEPARATOR), *_values(element, sa.String()))
    prefix = sa.literal("0x", sa.String()) + sa.func.substr(sa.func.md5(text), 1, 8)
    return compiler.process(sa.cast(prefix, sa.BigInteger()), **kw)


@compiles(RowHash, "sqlite")
def _sqlite(element: RowHash, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite has no hash function: its dialect registers this one on every connection.
    return compiler.process(getattr(sa.func, SQLITE_FUNCTION)(*element.clauses), **kw)


def _mssql_text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Every digit: a CAST to text would give times to the minute and floats to 6 digits
    (https://learn.microsoft.com/en-us/sql/t-sql/functions/cast-and-convert-transact-sql)."""
    text, t = mssql.NVARCHAR(None), column.type
    if isinstance(t, sqltypes.Date | sqltypes.DateTime | sqltypes.Time):
        return Convert(text, column, 126)  # ISO 8601, fractional digits included
    if isinstance(t, sqltypes.Float):  # REAL, FLOAT (a Numeric subclass in SQLAlchemy)
        return Convert(text, column, 3)  # 17 significant digits
    if isinstance(t, sqltypes._Binary):
        return Convert(text, column, 1)  # 0x and hex digits
    return sa.cast(column, text)


@compiles(RowHash, "mssql")
def _mssql(element: RowHash, compiler: SQLCompiler, **kw: Any) -> str:
    # HASHBYTES reads any length since SQL Server 2016.
    text = _joined(_values(element, mssql.NVARCHAR(None), _mssql_text), sa.func.nchar(SEPARATOR))
    digest = sa.func.substring(sa.func.hashbytes(sa.literal_column("'MD5'"), text), 1, 4)
    return compiler.process(sa.cast(digest, sa.Integer()), **kw)


def _oracle_text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """Times to the second or nanosecond (a CAST follows NLS_DATE_FORMAT: the day only, by
    default), NUMBER exact, RAW in hex, a CLOB by its first 4000 characters."""
    t = column.type
    if isinstance(t, sqltypes.DateTime) and getattr(t, "timezone", False):
        return sa.func.to_char(column, sa.literal_column("'YYYY-MM-DD HH24:MI:SS.FF9 TZH:TZM'"))
    if isinstance(t, oracle.TIMESTAMP):
        return sa.func.to_char(column, sa.literal_column("'YYYY-MM-DD HH24:MI:SS.FF9'"))
    if isinstance(t, sqltypes.Date | sqltypes.DateTime):  # DATE holds seconds, no fraction
        return sa.func.to_char(column, sa.literal_column("'YYYY-MM-DD HH24:MI:SS'"))
    if isinstance(t, sqltypes._Binary):
        return sa.func.rawtohex(column)
    if isinstance(t, sqltypes.Text | oracle.NCLOB):
        return sa.func.dbms_lob.substr(column, 4000, 1)
    if isinstance(t, sqltypes.String):
        return column
    return sa.func.to_char(column)


@compiles(RowHash, "oracle")
def _oracle(element: RowHash, compiler: SQLCompiler, **kw: Any) -> str:
    # One ORA_HASH per column, seeded by its position, summed modulo 2**32: a concatenation of a
    # wide JDE row would pass VARCHAR2's 4000 bytes. Oracle holds '' as NULL: the two hash alike.
    parts = _values(element, sa.String(4000), _oracle_text)
    hashes = [sa.func.ora_hash(part, BUCKETS - 1, seed) for seed, part in enumerate(parts, start=1)]
    return compiler.process(sa.func.mod(_joined(hashes, None), BUCKETS), **kw)


def _sybase_text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    t, text = column.type, sa.String(16384)
    if isinstance(t, sqltypes.Date | sqltypes.DateTime | sqltypes.Time):
        return Convert(sa.String(32), column, 140)  # yyyy-mm-dd hh:mm:ss.ffffff
    return sa.cast(column, text)


@compiles(RowHash, "sybase")
def _sybase(element: RowHash, compiler: SQLCompiler, **kw: Any) -> str:
    # One MD5 per column (its position hashed with it), summed modulo 2**32: a concatenation of
    # a wide row would pass the page-size limit of a VARCHAR.
    hashes = []
    for position, part in enumerate(_values(element, sa.String(16384), _sybase_text), start=1):
        digest = sa.func.hashbytes(sa.literal_column("'md5'"), sa.literal(f"{position}:") + part)
        hashes.append(sa.cast(sa.cast(sa.func.substring(digest, 1, 4), sa.Integer()), sa.BigInteger()))
    return compiler.process(_joined(hashes, None) % BUCKETS, **kw)


def sqlite_row_hash(*values: Any) -> int:
    """The SQLite function: CRC-32 of the values' repr (a third of MD5's cost per row in Python)."""
    return zlib.crc32(repr(values).encode())
