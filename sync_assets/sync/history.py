"""What sync_log tells of each table and update type: last success, last failure, live attempts.

Read in a few queries whatever the catalog's size: the latest row id of every (table, update
type, status, mode), those rows (in batches of ids), and the rows still marked running, judged
alive or abandoned as a new sync would judge them (audit.is_alive).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sync_assets.catalog.models import SYNC_LOG_TABLE
from sync_assets.sync import audit

ROWS_PER_QUERY = 500  # ids per IN list (SQL Server takes 2,100 parameters)
log = audit.sync_log
# What is shown; the counts are left out, so a cache an earlier version wrote can be read as it is.
COLUMNS = [
    log.c[name]
    for name in (
        "id",
        "table_name",
        "update_type",
        "mode",
        "status",
        "started_at",
        "finished_at",
        "error",
        "watermark_to",
        "run_id",
        "host",
        "pid",
    )
]


@dataclass(frozen=True)
class Attempt:
    """One sync_log row."""

    id: int
    table: str
    update_type: str
    mode: str | None
    status: str
    started_at: datetime  # naive UTC, as sync_log stores it
    finished_at: datetime | None
    error: str | None
    watermark_to: str | None
    run_id: str | None
    host: str | None
    pid: int | None
    abandoned: bool = False  # left running by a process that is gone

    @property
    def ended_at(self) -> datetime:
        return self.finished_at or self.started_at

    @property
    def failed(self) -> bool:
        """Only `failed` (and abandoned) is a failure; `cancelled` and other statuses are not."""
        return self.status == audit.FAILED or self.abandoned


@dataclass(frozen=True)
class History:
    """One table and update type as sync_log tells it."""

    last_success: Attempt | None = None  # of this update type, or any full load
    last_failure: Attempt | None = None
    last_finished: Attempt | None = None  # the latest attempt that ended (abandoned ones included)
    running: tuple[Attempt, ...] = ()  # attempts whose process is still alive
    reset: Attempt | None = None  # a reset the next incremental will honour (see audit.last_watermark)


@dataclass
class _Rows:
    """The latest rows of one table, by (update type, status, mode)."""

    latest: dict[tuple[str, str, str | None], Attempt] = field(default_factory=dict)
    live: list[Attempt] = field(default_factory=list)
    abandoned: list[Attempt] = field(default_factory=list)


def read_history(
    conn: sa.Connection,
    update_types: Iterable[tuple[str, str]],
    *,
    is_run_alive: Callable[[str], bool] | None = None,
) -> dict[tuple[str, str], History]:
    """History of each (table, update type) asked for; a cache without sync_log has none yet.

    A full load brings every update type of its table up to date (the asset factory records it so),
    so it counts as the last success of each.
    """
    wanted = list(update_types)
    if not sa.inspect(conn).has_table(SYNC_LOG_TABLE):
        return {key: History() for key in wanted}
    tables = _rows_by_table(conn, is_run_alive)
    return {(table, kind): _history(tables.get(table, _Rows()), kind) for table, kind in wanted}


def _rows_by_table(conn: sa.Connection, is_run_alive: Callable[[str], bool] | None) -> dict[str, _Rows]:
    latest_ids = (
        sa.select(sa.func.max(log.c.id))
        .where(log.c.status != audit.RUNNING)
        .group_by(log.c.table_name, log.c.update_type, log.c.status, log.c.mode)
    )
    ids = list(conn.execute(latest_ids).scalars())
    tables: dict[str, _Rows] = defaultdict(_Rows)
    for start in range(0, len(ids), ROWS_PER_QUERY):
        chunk = ids[start : start + ROWS_PER_QUERY]
        for row in conn.execute(sa.select(*COLUMNS).where(log.c.id.in_(chunk))):
            attempt = _attempt(row)
            tables[attempt.table].latest[(attempt.update_type, attempt.status, attempt.mode)] = attempt
    for row in conn.execute(sa.select(*COLUMNS).where(log.c.status == audit.RUNNING).order_by(log.c.id)):
        if audit.is_alive(row, is_run_alive):
            tables[row.table_name].live.append(_attempt(row))
        else:
            tables[row.table_name].abandoned.append(_attempt(row, abandoned=True))
    return tables


def _attempt(row: sa.Row[Any], *, abandoned: bool = False) -> Attempt:
    return Attempt(
        id=row.id,
        table=row.table_name,
        update_type=row.update_type,
        mode=row.mode,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=audit.ABANDONED_MESSAGE if abandoned else row.error,
        watermark_to=row.watermark_to,
        run_id=row.run_id,
        host=row.host,
        pid=row.pid,
        abandoned=abandoned,
    )


def _history(rows: _Rows, kind: str) -> History:
    own = [a for (u, status, _), a in rows.latest.items() if u == kind and status != audit.RESET]
    full_loads = [
        a for (_, status, mode), a in rows.latest.items() if status == audit.SUCCEEDED and mode == audit.FULL
    ]
    abandoned = [a for a in rows.abandoned if a.update_type == kind]
    successes = [a for a in own if a.status == audit.SUCCEEDED] + full_loads
    marks = [a for (_, status, _), a in rows.latest.items() if status in (audit.SUCCEEDED, audit.RESET)]
    mark = _latest(marks)
    return History(
        last_success=_latest(successes),
        last_failure=_latest([a for a in own if a.failed] + abandoned),
        last_finished=_latest(own + full_loads + abandoned),
        running=tuple(a for a in rows.live if a.update_type == kind),
        reset=mark if mark is not None and mark.status == audit.RESET else None,
    )


def _latest(attempts: list[Attempt]) -> Attempt | None:
    return max(attempts, key=lambda a: a.id, default=None)
