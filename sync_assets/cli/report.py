"""How `sync-assets status` shows its findings: JSON for scripts, an aligned table for a person."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sync_assets.cli.render import age, aligned
from sync_assets.cli.states import State, Status
from sync_assets.sync.history import Attempt

ERROR_CHARS = 300  # of an error shown under the table; --json gives it whole


def as_json(statuses: Sequence[Status]) -> str:
    return json.dumps([_record(s) for s in statuses], indent=2)


def _record(status: Status) -> dict[str, Any]:
    history = status.history
    lag = status.lag
    return {
        "table": status.table,
        "update_type": status.update_type.value,
        "state": status.state.value,
        "last_success_at": _when(history.last_success),
        "last_failure_at": _when(history.last_failure),
        "error": status.error,
        "watermark": iso_watermark(status.watermark),
        "running": [
            {"run_id": a.run_id, "host": a.host, "pid": a.pid, "started_at": iso(a.started_at)}
            for a in history.running
        ],
        "schedule": status.schedule,
        "freshness": status.freshness,
        "failing_checks": None
        if status.failing_checks is None
        else [
            {"name": c.name, "severity": c.severity, "description": c.description}
            for c in status.failing_checks
        ],
        "reset": iso_watermark(status.reset),
        "lag": None
        if lag is None
        else {
            "seconds": lag.seconds,
            "source_max": iso_watermark(_text(lag.source_max)),
            "cache_max": iso_watermark(_text(lag.cache_max)),
            "passed": lag.passed,
            "description": lag.description,
        },
    }


def iso(moment: datetime) -> str:
    """A sync_log time (naive UTC) in ISO 8601 with its offset."""
    return moment.replace(tzinfo=UTC).isoformat(timespec="seconds")


def iso_watermark(value: str | None) -> str | None:
    """A watermark as sync_log keeps it, a timestamp written the ISO 8601 way (its offset, if any,
    is the source column's: a watermark is in the source's own terms)."""
    if value is None or " " not in value:
        return value
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return value


def _when(attempt: Attempt | None) -> str | None:
    return iso(attempt.ended_at) if attempt else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def as_text(statuses: Sequence[Status], *, now: datetime, lag: bool) -> str:
    """One row per table and update type; why each failing or stale one is so, underneath."""
    header = ["TABLE", "TYPE", "STATE", "LAST SUCCESS", "LAST FAILURE", "RUNNING", "WATERMARK", "CHECKS"]
    if lag:
        header.append("LAG")
    rows: list[list[str]] = []
    notes: dict[str, list[str]] = {}  # why -> the rows it concerns
    previous = None
    for status in statuses:
        first = status.table != previous  # table-wide columns are shown once per table
        previous = status.table
        history = status.history
        row = [
            status.table if first else "",
            status.update_type.value,
            status.state.value,
            _success(history.last_success, now),
            f"{age(_seconds(history.last_failure, now))} ago" if history.last_failure else "-",
            _running(history.running, now),
            _watermark(status),
            _checks(status) if first else "",
        ]
        if lag:
            row.append(_lag(status) if first else "")
        rows.append(row)
        if why := _why(status):
            notes.setdefault(why, []).append(f"{status.table} {status.update_type.value}")
    lines = [
        f"{'every table shown' if len(names) == len(statuses) > 1 else ', '.join(names)}: {why}"
        for why, names in notes.items()
    ]
    return aligned(header, rows) + ("\n\n" + "\n".join(lines) if lines else "")


def _seconds(attempt: Attempt, now: datetime) -> float:
    return (now - attempt.ended_at.replace(tzinfo=UTC)).total_seconds()


def _success(attempt: Attempt | None, now: datetime) -> str:
    if attempt is None:
        return "-"
    return f"{attempt.ended_at:%Y-%m-%d %H:%M:%S} ({age(_seconds(attempt, now))} ago)"


def _running(attempts: Sequence[Attempt], now: datetime) -> str:
    if not attempts:
        return "-"
    newest = attempts[-1]
    since = age((now - newest.started_at.replace(tzinfo=UTC)).total_seconds())
    more = f" (+{len(attempts) - 1})" if len(attempts) > 1 else ""
    return f"pid {newest.pid} on {newest.host}, {since}{more}"


def _watermark(status: Status) -> str:
    shown = status.watermark or "-"
    if status.reset is not None:
        shown += f" (reset: next from {status.reset})" if status.reset != "full" else " (reset: next in full)"
    return shown


def _checks(status: Status) -> str:
    if status.failing_checks is None:
        return "n/a"  # no instance to read them from
    return ", ".join(c.name for c in status.failing_checks) or "-"


def _lag(status: Status) -> str:
    if status.lag is None:
        return "-"
    if status.lag.seconds is None:
        return "ok" if status.lag.passed else "behind"
    return age(status.lag.seconds)


def _why(status: Status) -> str | None:
    """What a person must know of a row that needs attention."""
    if status.unreachable:
        return status.unreachable
    if status.state is State.FAILED and status.error:
        error = status.error
        return error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 3] + "..."
    if status.state is State.STALE:
        return status.freshness
    return None
