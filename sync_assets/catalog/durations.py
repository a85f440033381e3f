"""Durations in the catalog: "90s", "30m", "6h", "2d", "1w", seconds, or ISO 8601."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _parse_duration(value: Any) -> Any:
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return timedelta(seconds=float(m.group("n")) * _UNIT_SECONDS[m.group("unit")])
    return value


Duration = Annotated[timedelta, BeforeValidator(_parse_duration)]
