"""A neutral description of column types, between source reflection, polars batches and cache DDL.

Source types (reflected through SQLAlchemy) become a `ColumnType`; each cache dialect turns a
`ColumnType` into its own DDL type, and `polars_dtype` gives the type batches carry in between.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import polars as pl
import sqlalchemy as sa
from sqlalchemy.sql import sqltypes

from sync_assets.errors import UnsupportedType

# polars' Decimal holds at most 38 digits; wider or unbounded numerics travel as exact text.
POLARS_MAX_DECIMAL_PRECISION = 38
# Batches carry microseconds, or nanoseconds for sources that have more fractional digits.
MICROSECOND_DIGITS = 6


class Kind(StrEnum):
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    STRING = "string"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    TIME = "time"
    BINARY = "binary"
    UUID = "uuid"  # carried as canonical 36-character text, so no driver can swap its bytes


@dataclass(frozen=True)
class ColumnType:
    kind: Kind
    bits: int | None = None  # INTEGER: 16, 32 or 64
    precision: int | None = None  # DECIMAL digits (None = unbounded); DATETIME/TIME fractional digits
    scale: int | None = None  # DECIMAL
    length: int | None = None  # STRING/BINARY maximum length, None = unbounded
    timezone: bool = False  # DATETIME

    def describe(self) -> str:
        if self.kind is Kind.DECIMAL:
            return f"decimal({self.precision},{self.scale})" if self.precision else "unbounded decimal"
        if self.kind is Kind.INTEGER:
            return f"int{self.bits}"
        if self.kind is Kind.STRING and self.length:
            return f"string({self.length})"
        if self.kind is Kind.DATETIME:
            digits = f"({self.precision})" if self.precision is not None else ""
            return f"datetime{digits} with time zone" if self.timezone else f"datetime{digits}"
        return self.kind.value


def from_sqlalchemy(type_: sa.types.TypeEngine[object], *, table: str, column: str) -> ColumnType:
    """Map a reflected SQLAlchemy type; anything not understood is refused, never guessed."""
    t = type_
    if isinstance(t, sqltypes.Boolean):
        return ColumnType(Kind.BOOLEAN)
    if isinstance(t, sqltypes.Integer):
        if isinstance(t, sqltypes.SmallInteger):
            return ColumnType(Kind.INTEGER, bits=16)
        if isinstance(t, sqltypes.BigInteger):
            return ColumnType(Kind.INTEGER, bits=64)
        return ColumnType(Kind.INTEGER, bits=32)
    if isinstance(t, sqltypes.Float):
        return ColumnType(Kind.FLOAT)
    if isinstance(t, sqltypes.Numeric):
        return ColumnType(Kind.DECIMAL, precision=t.precision, scale=t.scale if t.precision else None)
    if isinstance(t, sqltypes.DateTime):
        return ColumnType(Kind.DATETIME, precision=getattr(t, "precision", None), timezone=bool(t.timezone))
    if isinstance(t, sqltypes.Date):
        return ColumnType(Kind.DATE)
    if isinstance(t, sqltypes.Time):
        return ColumnType(Kind.TIME, precision=getattr(t, "precision", None))
    if isinstance(t, sqltypes.Uuid):
        return ColumnType(Kind.UUID)
    if isinstance(t, sqltypes.JSON):
        return ColumnType(Kind.STRING)
    if isinstance(t, sqltypes.String):
        return ColumnType(Kind.STRING, length=t.length)
    if isinstance(t, sqltypes._Binary):
        return ColumnType(Kind.BINARY, length=getattr(t, "length", None))
    raise UnsupportedType(table, column, str(type_))


def needs_text_transport(type_: sa.types.TypeEngine[object], ct: ColumnType) -> bool:
    """Values the driver returns as objects polars cannot hold exactly (Decimal beyond 38 digits,
    UUID, JSON) are cast to text in the source query instead."""
    return polars_dtype(ct) == pl.String() and not isinstance(type_, sqltypes.String)


def from_polars(dtype: pl.DataType, *, table: str, column: str) -> ColumnType:
    """Types of a `query:` source, inferred from its first batch."""
    if dtype == pl.Boolean:
        return ColumnType(Kind.BOOLEAN)
    if dtype.is_integer():
        return ColumnType(Kind.INTEGER, bits=64)
    if dtype.is_float():
        return ColumnType(Kind.FLOAT)
    if isinstance(dtype, pl.Decimal):
        return ColumnType(Kind.DECIMAL, precision=dtype.precision, scale=dtype.scale)
    if isinstance(dtype, pl.Datetime):
        return ColumnType(Kind.DATETIME, precision=6, timezone=dtype.time_zone is not None)
    if dtype == pl.Date:
        return ColumnType(Kind.DATE)
    if dtype == pl.Time:
        return ColumnType(Kind.TIME)
    if dtype == pl.Binary:
        return ColumnType(Kind.BINARY)
    if dtype in (pl.String, pl.Null):
        return ColumnType(Kind.STRING)
    raise UnsupportedType(table, column, str(dtype))


def polars_dtype(ct: ColumnType) -> pl.DataType:
    """The dtype batches carry for a column: exact for decimals, microseconds for timestamps."""
    match ct.kind:
        case Kind.INTEGER:
            return {16: pl.Int16(), 32: pl.Int32()}.get(ct.bits or 64, pl.Int64())
        case Kind.DECIMAL:
            if ct.precision and ct.precision <= POLARS_MAX_DECIMAL_PRECISION and ct.scale is not None:
                return pl.Decimal(ct.precision, ct.scale)
            return pl.String()
        case Kind.FLOAT:
            return pl.Float64()
        case Kind.STRING:
            return pl.String()
        case Kind.BOOLEAN:
            return pl.Boolean()
        case Kind.DATE:
            return pl.Date()
        case Kind.DATETIME:
            unit = "ns" if (ct.precision or 0) > MICROSECOND_DIGITS else "us"
            return pl.Datetime(unit, "UTC" if ct.timezone else None)
        case Kind.TIME:
            return pl.Time()
        case Kind.BINARY:
            return pl.Binary()
        case Kind.UUID:
            return pl.String()


_NAMED = {
    "smallint": ColumnType(Kind.INTEGER, bits=16),
    "int": ColumnType(Kind.INTEGER, bits=32),
    "integer": ColumnType(Kind.INTEGER, bits=64),
    "bigint": ColumnType(Kind.INTEGER, bits=64),
    "double": ColumnType(Kind.FLOAT),
    "float": ColumnType(Kind.FLOAT),
    "text": ColumnType(Kind.STRING),
    "string": ColumnType(Kind.STRING),
    "boolean": ColumnType(Kind.BOOLEAN),
    "date": ColumnType(Kind.DATE),
    "timestamp": ColumnType(Kind.DATETIME, precision=MICROSECOND_DIGITS),
    "timestamptz": ColumnType(Kind.DATETIME, precision=MICROSECOND_DIGITS, timezone=True),
    "time": ColumnType(Kind.TIME),
    "uuid": ColumnType(Kind.UUID),
    "binary": ColumnType(Kind.BINARY),
}
_SIZED = re.compile(r"^(?P<name>decimal|numeric|varchar|string)\((?P<a>\d+)(?:,\s*(?P<b>\d+))?\)$")


def parse_type(text: str) -> ColumnType:
    """A neutral type as a catalog names it: `bigint`, `decimal(12,2)`, `varchar(20)`, `timestamp`,
    `timestamptz`, `text` ... Raises ValueError naming the known names."""
    name = " ".join(text.lower().split())
    if name in _NAMED:
        return _NAMED[name]
    if m := _SIZED.match(name.replace(" ", "")):
        a, b = int(m["a"]), m["b"]
        if m["name"] in ("decimal", "numeric"):
            return ColumnType(Kind.DECIMAL, precision=a, scale=int(b) if b is not None else 0)
        if b is None:
            return ColumnType(Kind.STRING, length=a)
    known = ", ".join([*_NAMED, "decimal(p,s)", "varchar(n)"])
    msg = f"unknown type '{text}' (known: {known})"
    raise ValueError(msg)
