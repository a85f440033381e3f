"""Plain text for a terminal: ages a person reads at a glance, and columns that line up."""

from __future__ import annotations

from collections.abc import Sequence


def age(seconds: float) -> str:
    """'45s', '12m', '3h 5m', '2d 4h': at most two units, rounded down."""
    left = max(int(seconds), 0)
    if left < 60:
        return f"{left}s"
    if left < 3_600:
        return f"{left // 60}m"
    if left < 86_400:
        hours, minutes = divmod(left // 60, 60)
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(left // 3_600, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of left-aligned columns two spaces apart, without trailing blanks."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
