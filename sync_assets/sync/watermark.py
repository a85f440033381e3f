"""Watermark values: kept in sync_log as text at full precision, and the lookback rule."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sync_assets.sync.types import ColumnType, Kind


def encode(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def decode(text: str | None, ct: ColumnType) -> Any:
    if text is None:
        return None
    match ct.kind:
        case Kind.DATETIME:
            return datetime.fromisoformat(text)
        case Kind.DATE:
            return date.fromisoformat(text[:10])
        case Kind.INTEGER:
            return int(text)
        case Kind.DECIMAL:
            return Decimal(text)
        case Kind.FLOAT:
            return float(text)
    return text


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
