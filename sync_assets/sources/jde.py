"""JD Edwards storage conventions: vectorised polars transforms, and the SQL of a JDE watermark.

JDE stores dates as CYYDDD integers (year = 1900 + CYYDDD // 1000, day of year = CYYDDD % 1000,
0 = no date), times of day as HHMMSS integers, amounts as integers whose decimals the data
dictionary knows ("implied decimals"), and text in space-padded CHAR columns. Each batch is turned
into plain DATE / TIMESTAMP / exact DECIMAL / trimmed text here, after it is read, whatever the
read path; the source query itself is left alone so its indexes keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

import polars as pl
import sqlalchemy as sa

from sync_assets.catalog.jde import JDE_MAX_DIGITS
from sync_assets.errors import DataError

__all__ = ["JDE_MAX_DIGITS", "Transform", "from_jde", "from_julian", "to_julian", "watermark_bound"]

BASE_YEAR = 1900
MAX_JULIAN = (9999 - BASE_YEAR) * 1000 + 365  # 9999-12-31, the last date every database holds
MAX_HHMMSS = 235959
Bound = Literal[">=", "<=", "<"]


# -- scalar conversions (bounds of the watermark) ------------------------------------------------
def to_julian(day: date) -> int:
    """A date as CYYDDD: 2000-02-29 -> 100060."""
    return (day.year - BASE_YEAR) * 1000 + day.timetuple().tm_yday


def from_julian(value: int | None) -> date | None:
    """CYYDDD as a date; 0 and NULL mean no date."""
    if not value:
        return None
    return date(BASE_YEAR + value // 1000, 1, 1) + timedelta(days=value % 1000 - 1)


def to_hhmmss(moment: time | datetime) -> int:
    return moment.hour * 10000 + moment.minute * 100 + moment.second


def from_jde(day: int | None, hhmmss: int | None) -> datetime | None:
    """A Julian date and an HHMMSS time as one timestamp; a missing time is midnight."""
    found = from_julian(day)
    if found is None:
        return None
    seconds = hhmmss or 0
    return datetime(found.year, found.month, found.day, seconds // 10000, seconds // 100 % 100, seconds % 100)


# -- the watermark in source terms ---------------------------------------------------------------
def watermark_bound(
    day: sa.ColumnElement[Any], hhmmss: sa.ColumnElement[Any] | None, op: Bound, value: date
) -> sa.ColumnElement[bool]:
    """`(day, hhmmss) op value` as SQL whose leading predicate is a range on the date column.

    `day >= :d AND (day > :d OR hhmmss >= :t)` rather than a computed `day * 1000000 + hhmmss`, so
    an index on the date column (every JDE UPMJ has one) still drives the read on Oracle, SQL
    Server and Sybase. Without a time column the watermark is the Julian date alone.
    """
    name = {">=": "wm_low", "<=": "wm_high", "<": "wm_below"}[op]
    if hhmmss is None:
        whole_day = value.date() if isinstance(value, datetime) else value
        if isinstance(value, datetime) and value.time() != time(0):
            if op == ">=":
                whole_day += timedelta(days=1)  # a later time of that day: from the next whole day
            elif op == "<":
                op = "<="  # that day's midnight lies before the bound
        return _compare(day, op, sa.bindparam(f"{name}_day", to_julian(whole_day)))
    moment = value if isinstance(value, datetime) else datetime(value.year, value.month, value.day)
    if moment.microsecond:  # JDE times are whole seconds: a lower bound rounds up, upper ones down
        moment = moment.replace(microsecond=0) + timedelta(seconds=1) if op == ">=" else moment
        op = "<=" if op == "<" else op
    d = sa.bindparam(f"{name}_day", to_julian(moment.date()))
    t = sa.bindparam(f"{name}_time", to_hhmmss(moment))
    when = sa.func.coalesce(hhmmss, sa.literal_column("0"))  # a missing time is midnight
    if op == ">=":
        return sa.and_(day >= d, sa.or_(day > d, when >= t))
    if op == "<=":
        return sa.and_(day <= d, sa.or_(day < d, when <= t))
    return sa.and_(day <= d, sa.or_(day < d, when < t))


def has_date(day: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """Rows whose watermark is not NULL (0 is JDE's "no date")."""
    return day > 0


def max_watermark(
    from_clause: sa.FromClause, day: sa.ColumnElement[Any], hhmmss: sa.ColumnElement[Any] | None
) -> sa.Select[Any]:
    """(max date, max time on that date): two index lookups on the date instead of a scan."""
    newest = sa.select(sa.func.max(day)).select_from(from_clause).scalar_subquery()
    if hhmmss is None:
        return sa.select(newest, sa.null())
    return (
        sa.select(day, sa.func.max(sa.func.coalesce(hhmmss, sa.literal_column("0"))))
        .select_from(from_clause)
        .where(day == newest)
        .group_by(day)
    )


def _compare(column: sa.ColumnElement[Any], op: Bound, value: Any) -> sa.ColumnElement[bool]:
    return {">=": column >= value, "<=": column <= value, "<": column < value}[op]


# -- vectorised transforms -----------------------------------------------------------------------
@dataclass(frozen=True)
class Decimals:
    column: str
    places: int
    precision: int


@dataclass(frozen=True)
class Timestamp:
    column: str  # the new column
    day: str
    hhmmss: str


@dataclass(frozen=True)
class Transform:
    """What to do to a batch, by cache column name; new `timestamps` columns come last."""

    table: str
    julian_dates: tuple[str, ...] = ()
    timestamps: tuple[Timestamp, ...] = ()
    decimals: tuple[Decimals, ...] = ()
    trim: tuple[str, ...] = ()

    @property
    def changes(self) -> set[str]:
        """The read columns whose values (and type) the transform changes."""
        return {*self.julian_dates, *(d.column for d in self.decimals), *self.trim}

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The batch in cache types; raises DataError naming the column of a value JDE never writes."""
        for name in {*self.julian_dates, *(t.day for t in self.timestamps)}:
            self._refuse(frame, name, _not_whole_or(bad_julian, frame, name), "a CYYDDD date")
        for name in {t.hhmmss for t in self.timestamps}:
            self._refuse(frame, name, _not_whole_or(bad_hhmmss, frame, name), "an HHMMSS time")
        new = [
            jde_timestamp(
                whole(pl.col(t.day), frame.schema[t.day]), whole(pl.col(t.hhmmss), frame.schema[t.hhmmss])
            ).alias(t.column)
            for t in self.timestamps
        ]
        changed = [
            *(julian_date(whole(pl.col(n), frame.schema[n])).alias(n) for n in self.julian_dates),
            *(self._decimal(frame, d) for d in self.decimals),
            *(pl.col(n).str.strip_chars_end(" ") for n in self.trim),
        ]
        return frame.with_columns(new).with_columns(changed)

    def _decimal(self, frame: pl.DataFrame, spec: Decimals) -> pl.Expr:
        dtype = frame.schema[spec.column]
        expression = implied_decimal(pl.col(spec.column), dtype, spec.places, spec.precision)
        self._refuse(
            frame, spec.column, pl.col(spec.column).is_not_null() & expression.is_null(), "an integer"
        )
        return expression

    def _refuse(self, frame: pl.DataFrame, column: str, bad: pl.Expr, what: str) -> None:
        found = frame.filter(bad).get_column(column)
        if found.len():
            msg = (
                f"table '{self.table}': column '{column}': source value {found[0]!r} is not {what} "
                f"({found.len()} such values in this batch)"
            )
            raise DataError(msg, table=self.table)


def _not_whole_or(bad: Callable[[pl.Expr], pl.Expr], frame: pl.DataFrame, name: str) -> pl.Expr:
    """A value that is not a whole number (e.g. '12603X', 120000.5), or a whole one `bad` refuses."""
    number = whole(pl.col(name), frame.schema[name])
    return (pl.col(name).is_not_null() & number.is_null()) | bad(number)


def whole(expression: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A numeric column as Int64, whatever the driver delivered; NULL where it is not a whole number."""
    if dtype.is_integer():
        return expression.cast(pl.Int64)
    if dtype == pl.String:
        text = expression.str.strip_chars()
        return pl.when(text.str.contains(r"^[+-]?[0-9]+$")).then(text.cast(pl.Int64, strict=False))
    number = expression.cast(pl.Float64) if dtype.is_float() else expression
    integral = number.cast(pl.Int64, strict=False)
    return pl.when(integral.cast(dtype, strict=False) == expression).then(integral)


def julian_date(cyyddd: pl.Expr) -> pl.Expr:
    """CYYDDD -> Date; 0 and NULL (and invalid values) -> NULL."""
    valid = cyyddd.is_not_null() & ~bad_julian(cyyddd) & (cyyddd != 0)
    year = (cyyddd // 1000 + BASE_YEAR).clip(1, 9999).cast(pl.Int32)
    return pl.when(valid).then(pl.date(year, 1, 1) + pl.duration(days=cyyddd % 1000 - 1))


def bad_julian(cyyddd: pl.Expr) -> pl.Expr:
    """Not 0, and no day of a year 1900..9999 (day 366 only in a leap year)."""
    year = cyyddd // 1000 + BASE_YEAR
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    day = cyyddd % 1000
    ok = (cyyddd == 0) | (
        (cyyddd > 0)
        & (cyyddd <= MAX_JULIAN + 1)
        & (day >= 1)
        & (day <= pl.when(leap).then(366).otherwise(365))
    )
    return cyyddd.is_not_null() & ~ok


def bad_hhmmss(hhmmss: pl.Expr) -> pl.Expr:
    ok = (hhmmss >= 0) & (hhmmss <= MAX_HHMMSS) & (hhmmss // 100 % 100 < 60) & (hhmmss % 100 < 60)
    return hhmmss.is_not_null() & ~ok


def jde_timestamp(cyyddd: pl.Expr, hhmmss: pl.Expr) -> pl.Expr:
    """A Julian date plus an HHMMSS time (NULL = midnight) as a timestamp in microseconds."""
    seconds = hhmmss.fill_null(0)
    clock = pl.duration(hours=seconds // 10000, minutes=seconds // 100 % 100, seconds=seconds % 100)
    return julian_date(cyyddd).cast(pl.Datetime("us")) + clock


def implied_decimal(column: pl.Expr, dtype: pl.DataType, places: int, precision: int) -> pl.Expr:
    """12345 with 2 places -> Decimal 123.45, in exact 128-bit decimal arithmetic (never a float).

    NULL where the source value is not a whole number or does not fit `precision` digits.
    """
    if dtype == pl.String:
        text = column.str.strip_chars()
        integer = pl.when(text.str.contains(r"^[+-]?[0-9]+$")).then(
            text.cast(pl.Decimal(38, 0), strict=False)
        )
    elif dtype.is_float():
        integer = whole(column, dtype).cast(pl.Decimal(38, 0))
    elif isinstance(dtype, pl.Decimal) and (dtype.scale or 0) > 0:
        integer = column.cast(pl.Decimal(38, 0), strict=False)
        integer = pl.when(integer.cast(dtype, strict=False) == column).then(integer)
    else:
        integer = column.cast(pl.Decimal(38, 0))
    scaled = (
        integer * pl.lit(Decimal(1).scaleb(-places), dtype=pl.Decimal(places + 1, places))
        if places
        else integer
    )
    return scaled.cast(pl.Decimal(precision, places), strict=False)
