"""The `sync_log` table in the cache: one row per sync attempt, read by apps ("last synced")."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from sync_assets.catalog.models import SYNC_LOG_TABLE
from sync_assets.dialects.ddl import AddColumn

# `cancelled`: interrupted (Ctrl-C, SIGTERM, a run terminated from the UI); the cache is unchanged.
RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"


def _this_machine() -> str:
    """This machine as sync_log and run tags name it: its host name, and on Linux its PID
    namespace, which containers that share the host's name (Docker's host network) do not share."""
    name = socket.gethostname()
    try:
        return f"{name}/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return name


HOST = _this_machine()
ABANDONED_MESSAGE = "abandoned: the process running this sync ended before it finished"
ERROR_MAX_CHARS = 4000
# Not an attempt: `sync-assets reset` moved where the table's next incremental starts (see last_watermark).
RESET = "reset"
FULL, INCREMENTAL = "full", "incremental"  # sync_log.mode: what ran, or what a reset asks for

metadata = sa.MetaData()
sync_log = sa.Table(
    SYNC_LOG_TABLE,
    metadata,
    # The sequence is used only where there is no autoincrement type (DuckDB).
    sa.Column("id", sa.Integer, sa.Sequence("sync_log_id_seq", optional=True), primary_key=True),
    sa.Column("table_name", sa.String(128), nullable=False),
    sa.Column("source", sa.String(63), comment="catalog connection the rows come from"),
    sa.Column("target_table", sa.String(128), nullable=False),
    sa.Column("update_type", sa.String(16), nullable=False, comment="partition asked for"),
    sa.Column("mode", sa.String(16), comment="full or incremental: what actually ran"),
    sa.Column("run_id", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", sa.DateTime, nullable=False, comment="UTC"),
    sa.Column("finished_at", sa.DateTime, comment="UTC"),
    sa.Column("rows_read", sa.BigInteger),
    sa.Column("rows_written", sa.BigInteger),
    sa.Column("rows_inserted", sa.BigInteger),
    sa.Column("rows_updated", sa.BigInteger, comment="keys already cached whose values changed"),
    sa.Column("rows_unchanged", sa.BigInteger, comment="keys re-read with the values already cached"),
    sa.Column("rows_deleted", sa.BigInteger, comment="rows gone from the source: deleted or stamped"),
    sa.Column("watermark_from", sa.String(64), comment="lower bound read, lookback included"),
    sa.Column("watermark_to", sa.String(64), comment="highest watermark loaded, full precision"),
    sa.Column("error", sa.Text),
    sa.Column("host", sa.String(255), comment="machine of the process that ran the sync"),
    sa.Column("pid", sa.Integer, comment="its process id: running rows whose process is gone are abandoned"),
    sa.Index("ix_sync_log_table_status", "table_name", "status", "id"),
)


@dataclass(frozen=True)
class Outcome:
    mode: str
    rows_read: int
    rows_written: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    watermark_from: str | None
    watermark_to: str | None
    rows_deleted: int = 0


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def ensure_table(engine: sa.Engine) -> None:
    """Create sync_log once, and add the columns a cache made by an earlier version lacks; two
    syncs racing to do either is not an error."""
    try:
        metadata.create_all(engine, checkfirst=True)
    except sa.exc.DBAPIError:
        if not sa.inspect(engine).has_table(SYNC_LOG_TABLE):
            raise
    for name in _missing_columns(engine):
        try:
            with engine.begin() as conn:
                conn.execute(AddColumn(sync_log, sync_log.c[name]))
        except sa.exc.DBAPIError:
            if name in _missing_columns(engine):
                raise


def _missing_columns(engine: sa.Engine) -> list[str]:
    present = {c["name"] for c in sa.inspect(engine).get_columns(SYNC_LOG_TABLE)}
    return [c.name for c in sync_log.columns if c.name not in present]


@dataclass(frozen=True)
class Busy:
    """Why an attempt cannot start yet; the caller waits and tries again."""

    reason: str


def start(
    conn: sa.Connection,
    *,
    table: str,
    target: str,
    source: str,
    update_type: str,
    run_id: str,
    retention_days: int,
    max_parallel: int | None = None,
    is_run_alive: Callable[[str], bool] | None = None,
) -> int | Busy:
    """Open this attempt, or say why not yet: the table already has a live sync, or `source`
    already runs `max_parallel` of them.

    One live sync per table holds even where Dagster's pools do not (an instance without them,
    or a step that outlived its killed run). Attempts left 'running' by a process that is gone are
    closed as abandoned first; old rows are purged. Call inside a transaction that serialises
    starts (see CacheDialect.serialize_starts).
    """
    # This process is about to sync: an attempt it still has open is an earlier one that could
    # not record its end (the cache was down), as a process runs one sync at a time.
    live = _live_attempts(
        conn,
        sa.or_(sync_log.c.table_name == table, sync_log.c.source == source),
        is_run_alive,
        mine_are_over=True,
    )
    if same := next((row for row in live if row.table_name == table), None):
        return _being_synced(table, same)
    busy = sum(1 for row in live if row.source == source)
    if max_parallel is not None and busy >= max_parallel:
        return Busy(f"source '{source}' already runs {max_parallel} sync(s) (max_parallel)")
    conn.execute(sa.delete(sync_log).where(sync_log.c.started_at < now() - timedelta(days=retention_days)))
    row = conn.execute(
        sa.insert(sync_log)
        .values(
            table_name=table,
            target_table=target,
            source=source,
            update_type=update_type,
            run_id=run_id,
            status=RUNNING,
            started_at=now(),
            host=HOST,
            pid=os.getpid(),
        )
        .returning(sync_log.c.id)
    )
    return int(row.scalar_one())


def _being_synced(table: str, row: sa.Row[Any]) -> Busy:
    return Busy(f"table '{table}' is being synced by run {row.run_id} (pid {row.pid} on {row.host})")


def _live_attempts(
    conn: sa.Connection,
    which: sa.ColumnElement[bool],
    is_run_alive: Callable[[str], bool] | None,
    *,
    mine_are_over: bool = False,
) -> list[sa.Row[Any]]:
    """The running attempts `which` selects whose process may still run them; the others (and,
    with `mine_are_over`, those of this very process) are closed as abandoned."""
    running = conn.execute(
        sa.select(
            sync_log.c.id,
            sync_log.c.table_name,
            sync_log.c.source,
            sync_log.c.host,
            sync_log.c.pid,
            sync_log.c.run_id,
        ).where(sync_log.c.status == RUNNING, which)
    ).all()
    dead = [
        row.id
        for row in running
        if (mine_are_over and row.host == HOST and row.pid == os.getpid()) or not is_alive(row, is_run_alive)
    ]
    if dead:
        conn.execute(
            sa.update(sync_log)
            .where(sync_log.c.id.in_(dead))
            .values(status=FAILED, finished_at=now(), error=ABANDONED_MESSAGE)
        )
    return [row for row in running if row.id not in dead]


def is_alive(row: sa.Row[Any], is_run_alive: Callable[[str], bool] | None) -> bool:
    """On this machine, whether the process still exists; elsewhere, what Dagster knows of the run."""
    if row.host is None:
        return False  # written before hosts were recorded: nothing can still be running it
    if row.host == HOST and row.pid is not None:
        return process_exists(row.pid)
    return is_run_alive(row.run_id) if is_run_alive and row.run_id else True


def process_exists(pid: int) -> bool:
    """Whether a process of this machine has this pid (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def succeed(conn: sa.Connection, attempt: int, outcome: Outcome) -> None:
    """Close the attempt; called inside the transaction that commits the data."""
    conn.execute(
        sa.update(sync_log)
        .where(sync_log.c.id == attempt)
        .values(
            status=SUCCEEDED,
            finished_at=now(),
            mode=outcome.mode,
            rows_read=outcome.rows_read,
            rows_written=outcome.rows_written,
            rows_inserted=outcome.rows_inserted,
            rows_updated=outcome.rows_updated,
            rows_unchanged=outcome.rows_unchanged,
            rows_deleted=outcome.rows_deleted,
            watermark_from=outcome.watermark_from,
            watermark_to=outcome.watermark_to,
        )
    )


def fail(
    conn: sa.Connection, attempt: int, *, error: str, mode: str | None, rows_read: int, status: str = FAILED
) -> None:
    """Close a running attempt as failed (or cancelled); an attempt that already committed stays
    succeeded."""
    conn.execute(
        sa.update(sync_log)
        .where(sync_log.c.id == attempt, sync_log.c.status == RUNNING)
        .values(
            status=status, finished_at=now(), error=error[:ERROR_MAX_CHARS], mode=mode, rows_read=rows_read
        )
    )


@dataclass(frozen=True)
class Mark:
    """The latest succeeded or reset row of a table: where its next incremental starts."""

    status: str | None  # None: the table never synced
    mode: str | None
    watermark: str | None

    @property
    def exact(self) -> bool:
        """A reset to a watermark: the next incremental reads from it as it is, without the lookback."""
        return self.status == RESET

    @property
    def full(self) -> bool:
        """A reset to a full load: the next incremental loads in full, as before the first success."""
        return self.status == RESET and self.mode == FULL


NEVER_SYNCED = Mark(status=None, mode=None, watermark=None)


def last_watermark(conn: sa.Connection, table: str) -> tuple[bool, Mark]:
    """(can the next incremental build on what is cached, the row that says where it starts).

    The latest of the table's succeeded and reset rows decides, so a reset (`sync-assets reset`)
    holds until a sync succeeds after it, and a failed sync leaves it in place.
    """
    row = conn.execute(
        sa.select(sync_log.c.status, sync_log.c.mode, sync_log.c.watermark_to)
        .where(sync_log.c.table_name == table, sync_log.c.status.in_([SUCCEEDED, RESET]))
        .order_by(sync_log.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return False, NEVER_SYNCED
    mark = Mark(status=row.status, mode=row.mode, watermark=row.watermark_to)
    return not mark.full, mark


def reset(
    conn: sa.Connection,
    *,
    table: str,
    target: str,
    source: str,
    watermark: str | None,
    run_id: str,
    is_run_alive: Callable[[str], bool] | None = None,
) -> int | Busy:
    """Record that the table's next incremental reads from `watermark` exactly, or (None) loads in full.

    Refused while a sync of the table runs: it would overwrite the reset when it succeeds. Call
    inside the transaction that serialises starts (see CacheDialect.serialize_starts), as start() is.
    """
    if live := next(iter(_live_attempts(conn, sync_log.c.table_name == table, is_run_alive)), None):
        return _being_synced(table, live)
    at = now()
    row = conn.execute(
        sa.insert(sync_log)
        .values(
            table_name=table,
            target_table=target,
            source=source,
            update_type=INCREMENTAL,
            mode=FULL if watermark is None else INCREMENTAL,
            run_id=run_id,
            status=RESET,
            started_at=at,
            finished_at=at,
            watermark_to=watermark,
            host=HOST,
            pid=os.getpid(),
        )
        .returning(sync_log.c.id)
    )
    return int(row.scalar_one())
