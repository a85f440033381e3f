"""One sync of one table: plan, stage, then swap or merge in one transaction.

Nothing is visible to readers of the cache until that last transaction commits, and the same
transaction closes the sync_log row; a failure, cancellation or kill leaves the target as it was.
The steps live in their own modules (plan, stage, commit); this one opens the connections, keeps
the sync_log attempt, and turns whatever stops a sync into one error naming table, phase and
connection.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa

from sync_assets.catalog.models import Catalog, TableSpec, UpdateType
from sync_assets.dialects import CacheDialect, Database, SourceDialect
from sync_assets.dialects.base import DATABASE_ERRORS
from sync_assets.errors import (
    SyncCancelled,
    SyncError,
    SyncTransientError,
    UpdateTypeNotAllowed,
    describe_error,
)
from sync_assets.redact import redact
from sync_assets.resources.database import Engines, SqlDatabase
from sync_assets.resources.files import FileDrop
from sync_assets.resources.rest import RestApi
from sync_assets.sources.base import Source
from sync_assets.sources.sql import SqlSource, SqlTable
from sync_assets.sync import audit
from sync_assets.sync.commit import commit
from sync_assets.sync.interrupts import interrupts_deferred, is_interrupt
from sync_assets.sync.plan import FULL, INCREMENTAL, plan_sync
from sync_assets.sync.progress import Progress
from sync_assets.sync.stage import Stager

__all__ = ["FULL", "INCREMENTAL", "SyncResult", "run_sync"]

Log = Callable[[str], None]
OpenSource = Callable[[], AbstractContextManager[Source]]


@dataclass(frozen=True)
class SyncResult:
    table: str
    update_type: UpdateType
    mode: str
    rows_read: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    rows_deleted: int
    hashes_compared: int  # keys listed from both sides by a key-range comparison (not rows read)
    row_count: int
    watermark_from: str | None
    watermark_to: str | None
    seconds: float
    target_table: sa.Table
    # The source table as this sync reflected it (SQL sources): the checks after it reuse it.
    source_table: SqlTable | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def run_sync(
    catalog: Catalog,
    table: TableSpec,
    update_type: UpdateType,
    *,
    source_db: SqlDatabase | RestApi | FileDrop,
    cache_db: SqlDatabase,
    run_id: str,
    log: Log,
    is_run_alive: Callable[[str], bool] | None = None,
    engines: Engines | None = None,
) -> SyncResult:
    """Sync `table` for `update_type`; raises SyncError (secrets masked) when it cannot, and
    SyncCancelled when it is interrupted (recorded as `cancelled`; the cache is unchanged).

    `is_run_alive` tells whether a run of another machine still runs (Dagster's run status), for
    the source's `max_parallel` slots and for closing abandoned attempts. `engines` keeps the
    engines for what follows the sync (its checks); without it they are disposed at its end.
    """
    if update_type.is_incremental and not table.is_incremental:
        msg = (
            f"table '{table.name}' has no `updated_at` column (nor `change_detection: hash`), so it "
            f"can only be synced by the 'mass' partition; '{update_type.value}' was asked for and "
            "nothing was changed"
        )
        raise UpdateTypeNotAllowed(msg, table=table.name)
    secrets = source_db.secrets(table=table.name) + cache_db.secrets(table=table.name)
    connections = {
        "source": source_db.describe("source", table=table.name),
        "cache": cache_db.describe("cache", table=table.name),
    }
    job = _Sync(catalog, table, update_type, run_id, log, secrets, connections)
    job.is_run_alive = is_run_alive
    progress = job.progress
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(progress.interrupts)
            kept = engines if engines is not None else stack.enter_context(Engines())
            progress.at("connect", "source")
            if not isinstance(source_db, SqlDatabase):  # an API or a folder: no engine to make
                open_source = job.other_source(source_db)
            else:
                source_engine, job.dialects["source"] = stack.enter_context(
                    kept.engine(source_db, role="source", table=table.name)
                )
                open_source = job.sql_source(source_engine, job.dialects["source"])
            progress.at("connect", "cache")
            cache_engine, job.dialects["cache"] = stack.enter_context(
                kept.engine(cache_db, role="cache", table=table.name)
            )
            return job.run(open_source, cache_engine, job.dialects["cache"])
    except SyncError as err:
        err.args = (redact(str(err), secrets),)
        raise
    except SyncCancelled:
        raise
    except BaseException as err:  # before the attempt was recorded: connecting, sync_log
        if is_interrupt(err):
            raise job.cancelled() from err
        if isinstance(err, DATABASE_ERRORS):
            raise job.error(err) from None
        raise


class _Sync:
    def __init__(
        self,
        catalog: Catalog,
        table: TableSpec,
        update_type: UpdateType,
        run_id: str,
        log: Log,
        secrets: list[str],
        connections: dict[str, str],
    ) -> None:
        self.catalog, self.table, self.update_type = catalog, table, update_type
        self.run_id, self.log, self.secrets = run_id, log, secrets
        self.connections = connections  # how messages name each side: "source connection 'jde' (url)"
        self.progress = Progress()
        self.dialects: dict[str, Database] = {}  # each side's, once its engine exists
        self.is_run_alive: Callable[[str], bool] | None = None

    def error(self, err: Exception) -> SyncError:
        """A driver error as one line naming the table, the update type, the phase and the
        connection (SQLAlchemy's carry the whole statement); transient or permanent by its code."""
        side = self.progress.side
        if side:
            connection = self.connections[side]
        else:  # a copy between the two
            connection = f"{self.connections['source']} to {self.connections['cache']}"
        text = redact(describe_error(err, phase=self.progress.phase, connection=connection), self.secrets)
        msg = f"table '{self.table.name}' ({self.update_type.value}): {text}"
        # The failing side's database decides (one vendor's code can mean another thing elsewhere);
        # a copy runs between two databases of one kind. Before any engine exists: permanent.
        dialect = self.dialects.get(side or "cache")
        transient = dialect is not None and dialect.is_transient(err)
        return (SyncTransientError if transient else SyncError)(msg, table=self.table.name)

    def cancelled(self) -> SyncCancelled:
        msg = f"table '{self.table.name}' ({self.update_type.value}): {self.cancellation()}"
        return SyncCancelled(msg, table=self.table.name)

    def cancellation(self) -> str:
        """What an interrupt did, for sync_log and the UI."""
        phase = self.progress.phase
        if self.progress.committed:
            return f"cancelled in the {phase} phase, after the commit: the synced rows are in the cache"
        return f"cancelled in the {phase} phase; nothing was changed"

    def sql_source(self, engine: sa.Engine, dialect: SourceDialect) -> OpenSource:
        @contextlib.contextmanager
        def open_source() -> Iterator[Source]:
            self.progress.at("connect", "source")
            with engine.connect() as conn:
                self.progress.at("plan", "source")
                batch_size = self.catalog.batch_size(self.table)
                yield SqlSource.open(conn, dialect, self.table, batch_size=batch_size, log=self.log)

        return open_source

    def other_source(self, resource: RestApi | FileDrop) -> OpenSource:
        @contextlib.contextmanager
        def open_source() -> Iterator[Source]:
            self.progress.at("plan", "source")
            batch_size = self.catalog.batch_size(self.table)
            with resource.open_source(self.table, batch_size=batch_size, log=self.log) as source:
                yield source

        return open_source

    def run(
        self, open_source: OpenSource, cache_engine: sa.Engine, cache_dialect: CacheDialect
    ) -> SyncResult:
        audit.ensure_table(cache_engine)
        with cache_engine.connect() as cache:
            attempt = self._open_attempt(cache, cache_dialect)
            started = time.monotonic()
            try:
                with open_source() as source:
                    result = self._sync(source, cache, cache_dialect, attempt, started)
            except BaseException as err:  # cancellation and kills of the step included
                with interrupts_deferred():  # the interrupt that follows the first must not cut this short
                    self._record_end(cache_engine, cache_dialect, attempt, err)
                if is_interrupt(err):
                    raise self.cancelled() from err
                if not isinstance(err, SyncError):
                    cause = None if isinstance(err, DATABASE_ERRORS) else err
                    raise self.error(err) from cause
                err.args = (f"{err} ({self.update_type.value} sync, {self.progress.phase} phase)",)
                raise
        return result

    def _open_attempt(self, cache: sa.Connection, dialect: CacheDialect) -> int:
        """The sync_log row of this attempt, once the table and its source are free (see audit.start)."""
        max_parallel = self.catalog.connections[self.table.source].max_parallel
        pause, waited, last_said = 0.5, 0.0, -60.0
        while True:
            with dialect.write_transaction(cache):
                dialect.serialize_starts(cache)
                attempt = audit.start(
                    cache,
                    table=self.table.name,
                    target=self.table.target,
                    source=self.table.source,
                    update_type=self.update_type.value,
                    run_id=self.run_id,
                    retention_days=self.catalog.defaults.sync_log_retention_days,
                    max_parallel=max_parallel,
                    is_run_alive=self.is_run_alive,
                )
            if not isinstance(attempt, audit.Busy):
                return attempt
            if waited - last_said >= 60:
                last_said = waited
                self.log(f"{self.table.name}: waiting, {attempt.reason}")
            time.sleep(pause)
            waited += pause
            pause = min(pause * 1.5, 15.0)

    def _sync(
        self, source: Source, cache: sa.Connection, dialect: CacheDialect, attempt: int, started: float
    ) -> SyncResult:
        progress, table = self.progress, self.table
        plan = plan_sync(progress, self.catalog, table, self.update_type, source, cache, self.log)
        with contextlib.ExitStack() as session:
            staged = Stager(progress, table, cache, dialect, self.log).stage(source, plan, session)
            outcome, deleted = commit(progress, table, cache, dialect, attempt, plan, staged, source)
            progress.committed = True
        target = staged.target
        progress.at("cleanup", "cache")
        try:
            if staged.staging is not None:
                with cache.begin():
                    staged.staging.drop(cache)
            dialect.after_commit(cache, target)
        except sa.exc.SQLAlchemyError as err:
            # The rows are committed and sync_log says so; leftovers go at the next sync.
            text = redact(describe_error(err, phase=None, connection=self.connections["cache"]), self.secrets)
            self.log(f"{table.name}: clean-up after the commit failed: {text}")
        if plan.mode == FULL and not table.post_sql:
            row_count = outcome.rows_inserted  # the reload is the whole table (a count: 0.25 s per 1M rows)
        else:
            with cache.begin():
                row_count = cache.execute(sa.select(sa.func.count()).select_from(target)).scalar_one()
        return SyncResult(
            table=table.name,
            update_type=self.update_type,
            mode=plan.mode,
            rows_read=progress.rows_read,
            rows_inserted=outcome.rows_inserted,
            rows_updated=outcome.rows_updated,
            rows_unchanged=outcome.rows_unchanged,
            rows_deleted=deleted.rows,
            hashes_compared=plan.changes.hashes_compared if plan.changes else deleted.hashes_compared,
            row_count=row_count,
            watermark_from=outcome.watermark_from,
            watermark_to=outcome.watermark_to,
            seconds=time.monotonic() - started,
            target_table=target,
            source_table=source.described if isinstance(source, SqlSource) else None,
        )

    def _record_end(self, engine: sa.Engine, dialect: CacheDialect, attempt: int, err: BaseException) -> None:
        """Close the attempt as failed, or as cancelled when `err` is an interrupt (no Exception:
        KeyboardInterrupt, SystemExit, Dagster's DagsterExecutionInterruptedError)."""
        if is_interrupt(err):
            status, text = audit.CANCELLED, self.cancellation()
        else:
            status = audit.FAILED
            side = self.progress.side
            connection = self.connections[side] if side and not isinstance(err, SyncError) else None
            text = redact(describe_error(err, phase=self.progress.phase, connection=connection), self.secrets)
        try:
            with engine.connect() as conn, dialect.write_transaction(conn):
                audit.fail(
                    conn,
                    attempt,
                    error=text,
                    mode=self.progress.mode,
                    rows_read=self.progress.rows_read,
                    status=status,
                )
        except sa.exc.SQLAlchemyError as audit_err:
            # The cache itself is unreachable; the next sync marks this attempt abandoned.
            name = type(audit_err).__name__
            self.log(f"{self.table.name}: could not record the {status} attempt in sync_log: {name}")
