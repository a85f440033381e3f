"""Watermark values: kept in sync_log as text at full precision, and the lookback rule."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sync_assets.types import ColumnType, Kind


def encode(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def decode(text: str | None, ct: ColumnType | None, *, like: Any = None) -> Any:
    """The stored text as a value of the watermark column's type.

    A query source has no declared types: its watermark takes the type of `like`, a value read
    from the same column.
    """
    if text is None:
        return None
    if ct is None:
        ct = _type_of(like)
    match ct.kind:
        case Kind.DATETIME:
            return _aligned(datetime.fromisoformat(text), like)
        case Kind.DATE:
            return date.fromisoformat(text[:10])
        case Kind.INTEGER:
            return int(text)
        case Kind.DECIMAL:
            return Decimal(text)
        case Kind.FLOAT:
            return float(text)
    return text


def _aligned(value: datetime, like: Any) -> datetime:
    """`value` with or without a time zone as the source's values are (`like`), naive meaning UTC.

    A watermark a sync stored matches already; one given to `sync-assets reset` may not, and a
    naive and an aware time cannot be compared.
    """
    if not isinstance(like, datetime) or (value.tzinfo is None) == (like.tzinfo is None):
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(tzinfo=None)


def _type_of(value: Any) -> ColumnType:
    if isinstance(value, datetime):
        return ColumnType(Kind.DATETIME)
    if isinstance(value, date):
        return ColumnType(Kind.DATE)
    if isinstance(value, int):
        return ColumnType(Kind.INTEGER)
    if isinstance(value, Decimal):
        return ColumnType(Kind.DECIMAL)
    return ColumnType(Kind.STRING)


def lower_bound(watermark: Any, lookback: timedelta) -> Any:
    """Where an incremental starts reading: the watermark minus the lookback window.

    Only time-like watermarks can look back in time; others restart at the watermark itself.
    """
    if isinstance(watermark, datetime):
        return watermark - lookback
    if isinstance(watermark, date):
        return watermark - timedelta(days=math.ceil(lookback / timedelta(days=1)))
    return watermark


def later(a: Any, b: Any) -> Any:
    """The higher of two watermarks, either of which may be missing."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
