"""One sync of one table: plan, stream into staging, then swap or merge in one transaction.

Nothing is visible to readers of the cache until that last transaction commits, and the same
transaction closes the sync_log row; a failure, cancellation or kill leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl
import sqlalchemy as sa

from sync_assets.catalog.models import Catalog, TableSpec, UpdateType
from sync_assets.dialects import Dialect
from sync_assets.dialects.base import DATABASE_ERRORS
from sync_assets.dialects.upsert import UpsertCounts
from sync_assets.errors import DataError, SyncCancelled, SyncError, SyncTransientError, UpdateTypeNotAllowed
from sync_assets.resources.database import SqlDatabase
from sync_assets.sync import audit, watermark
from sync_assets.sync.interrupts import InterruptWatch, interrupts_deferred, is_interrupt
from sync_assets.sync.reader import read_batches
from sync_assets.sync.redact import redact
from sync_assets.sync.source import Source, describe
from sync_assets.sync.target import cache_value_fixes, check_existing, target_table
from sync_assets.sync.types import from_polars

FULL, INCREMENTAL = audit.FULL, audit.INCREMENTAL
Log = Callable[[str], None]
Side = Literal["source", "cache"]


@dataclass(frozen=True)
class _Plan:
    mode: str
    low: Any = None  # first watermark read (lookback included)
    high: Any = None  # source's max watermark, read before extraction
    previous: Any = None  # watermark of the last successful sync


@dataclass(frozen=True)
class SyncResult:
    table: str
    update_type: UpdateType
    mode: str
    rows_read: int
    rows_inserted: int
    rows_updated: int
    rows_unchanged: int
    row_count: int
    watermark_from: str | None
    watermark_to: str | None
    seconds: float
    target_table: sa.Table

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def run_sync(
    catalog: Catalog,
    table: TableSpec,
    update_type: UpdateType,
    *,
    source_db: SqlDatabase,
    cache_db: SqlDatabase,
    run_id: str,
    log: Log,
    is_run_alive: Callable[[str], bool] | None = None,
) -> SyncResult:
    """Sync `table` for `update_type`; raises SyncError (secrets masked) when it cannot, and
    SyncCancelled when it is interrupted (recorded as `cancelled`; the cache is unchanged).

    `is_run_alive` tells whether a run of another machine still runs (Dagster's run status), for
    the source's `max_parallel` slots and for closing abandoned attempts.
    """
    if update_type.is_incremental and table.updated_at is None:
        msg = (
            f"table '{table.name}' has no `updated_at` column, so it can only be synced by the "
            f"'mass' partition; '{update_type.value}' was asked for and nothing was changed"
        )
        raise UpdateTypeNotAllowed(msg, table=table.name)
    secrets = source_db.secrets(table=table.name) + cache_db.secrets(table=table.name)
    connections = {
        "source": source_db.describe("source", table=table.name),
        "cache": cache_db.describe("cache", table=table.name),
    }
    job = _Sync(catalog, table, update_type, run_id, log, secrets, connections)
    job.is_run_alive = is_run_alive
    try:
        with contextlib.ExitStack() as engines:
            engines.enter_context(job.interrupts)
            job._at("connect", "source")
            source_engine, job.dialects["source"] = engines.enter_context(
                source_db.engine(role="source", table=table.name)
            )
            job._at("connect", "cache")
            cache_engine, job.dialects["cache"] = engines.enter_context(
                cache_db.engine(role="cache", table=table.name)
            )
            return job.run(source_engine, job.dialects["source"], cache_engine, job.dialects["cache"])
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
        self.rows_read = 0
        self.mode: str | None = None
        self.phase, self.side = "connect", "cache"  # what runs now, and on which connection (None: both)
        self.committed = False
        self.interrupts = InterruptWatch()
        self.dialects: dict[str, Dialect] = {}  # each side's, once its engine exists
        self.is_run_alive: Callable[[str], bool] | None = None

    def _at(self, phase: str, side: Side | None) -> None:
        """Enter `phase` on `side`: a checkpoint, where an interrupt that was swallowed is raised."""
        self.interrupts.check()
        self.phase, self.side = phase, side

    def error(self, err: Exception) -> SyncError:
        """A driver error as one line naming the table, the update type, the phase and the
        connection (SQLAlchemy's carry the whole statement); transient or permanent by its code."""
        if self.side:
            connection = self.connections[self.side]
        else:  # a copy between the two
            connection = f"{self.connections['source']} to {self.connections['cache']}"
        text = redact(describe_error(err, phase=self.phase, connection=connection), self.secrets)
        msg = f"table '{self.table.name}' ({self.update_type.value}): {text}"
        # The failing side's database decides (one vendor's code can mean another thing elsewhere);
        # a copy runs between two databases of one kind. Before any engine exists: permanent.
        dialect = self.dialects.get(self.side or "cache")
        transient = dialect is not None and dialect.is_transient(err)
        return (SyncTransientError if transient else SyncError)(msg, table=self.table.name)

    def cancelled(self) -> SyncCancelled:
        msg = f"table '{self.table.name}' ({self.update_type.value}): {self.cancellation()}"
        return SyncCancelled(msg, table=self.table.name)

    def cancellation(self) -> str:
        """What an interrupt did, for sync_log and the UI."""
        if self.committed:
            return f"cancelled in the {self.phase} phase, after the commit: the synced rows are in the cache"
        return f"cancelled in the {self.phase} phase; nothing was changed"

    def run(
        self,
        source_engine: sa.Engine,
        source_dialect: Dialect,
        cache_engine: sa.Engine,
        cache_dialect: Dialect,
    ) -> SyncResult:
        audit.ensure_table(cache_engine)
        with cache_engine.connect() as cache:
            attempt = self._open_attempt(cache, cache_dialect)
            started = time.monotonic()
            try:
                self._at("connect", "source")
                with source_engine.connect() as source_conn:
                    self._at("plan", "source")
                    result = self._sync(source_conn, source_dialect, cache, cache_dialect, attempt, started)
            except BaseException as err:  # cancellation and kills of the step included
                with interrupts_deferred():  # the interrupt that follows the first must not cut this short
                    self._record_end(cache_engine, cache_dialect, attempt, err)
                if is_interrupt(err):
                    raise self.cancelled() from err
                if not isinstance(err, SyncError):
                    cause = None if isinstance(err, DATABASE_ERRORS) else err
                    raise self.error(err) from cause
                err.args = (f"{err} ({self.update_type.value} sync, {self.phase} phase)",)
                raise
        return result

    def _open_attempt(self, cache: sa.Connection, dialect: Dialect) -> int:
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
        self,
        source_conn: sa.Connection,
        source_dialect: Dialect,
        cache: sa.Connection,
        cache_dialect: Dialect,
        attempt: int,
        started: float,
    ) -> SyncResult:
        self.source_dialect = source_dialect
        source = describe(source_conn, self.table, source_dialect)
        plan = self._plan(source_conn, source, cache)
        with contextlib.ExitStack() as session:
            target = target_table(source, cache_dialect) if source.schema() is not None else None
            if target is not None and self._direct_copy(source, source_conn, cache, cache_dialect, target):
                staging, exists, loaded_max, replace = self._copy_directly(
                    source, source_conn, cache, cache_dialect, plan, target, session
                )
            else:
                staging, target, exists, loaded_max, replace = self._copy_in_batches(
                    source, source_conn, cache, cache_dialect, plan
                )
            outcome = self._commit(
                cache, cache_dialect, attempt, plan, target, staging, exists, replace, loaded_max
            )
            self.committed = True
        self._at("cleanup", "cache")
        try:
            with cache.begin():
                staging.drop(cache)
            cache_dialect.after_commit(cache, target)
        except sa.exc.SQLAlchemyError as err:
            # The rows are committed and sync_log says so; leftovers go at the next sync.
            text = redact(describe_error(err, phase=None, connection=self.connections["cache"]), self.secrets)
            self.log(f"{self.table.name}: clean-up after the commit failed: {text}")
        if plan.mode == FULL and not self.table.post_sql:
            row_count = outcome.rows_inserted  # the reload is the whole table (a count: 0.25 s per 1M rows)
        else:
            with cache.begin():
                row_count = cache.execute(sa.select(sa.func.count()).select_from(target)).scalar_one()
        return SyncResult(
            table=self.table.name,
            update_type=self.update_type,
            mode=plan.mode,
            rows_read=self.rows_read,
            rows_inserted=outcome.rows_inserted,
            rows_updated=outcome.rows_updated,
            rows_unchanged=outcome.rows_unchanged,
            row_count=row_count,
            watermark_from=outcome.watermark_from,
            watermark_to=outcome.watermark_to,
            seconds=time.monotonic() - started,
            target_table=target,
        )

    def _copy_directly(
        self,
        source: Source,
        source_conn: sa.Connection,
        cache: sa.Connection,
        dialect: Dialect,
        plan: _Plan,
        target: sa.Table,
        session: contextlib.ExitStack,
    ) -> tuple[sa.Table, bool, Any, Callable[[], Any]]:
        """Same kind of database on both ends: the rows never pass through Python objects.

        An incremental lands in staging now; a full reload goes straight into the target inside
        the swap transaction, where readers still see the old rows until the commit.
        """
        exists = check_existing(cache, target, dialect, table=self.table.name)
        cache.commit()
        types = {c.name: c.type for c in target.columns} if dialect.cast_for_copy() else None
        statement = source.select(low=plan.low, high=plan.high, types=types)
        session.enter_context(dialect.copy_session(source_conn, cache))
        staging = dialect.staging_table(target, suffix=f"_{uuid.uuid4().hex[:8]}")
        with cache.begin():
            staging.create(cache)
            if plan.mode == INCREMENTAL and plan.high is not None:
                self._at("copy", None)
                self.rows_read = dialect.copy_rows(source_conn, statement, cache, staging, log=self.log)
            loaded_max = self._max_watermark(cache, staging)

        def replace() -> Any:
            def fill(dest: sa.Table) -> int:
                # The reload builds keys and indexes and renames around this: the swap proper.
                self._at("copy", None)
                rows = dialect.copy_rows(source_conn, statement, cache, dest, log=self.log)
                self._at("swap", "cache")
                return rows

            self.rows_read = dialect.reload(cache, target, fill)
            return self._max_watermark(cache, target)

        return staging, exists, loaded_max, replace

    def _copy_in_batches(
        self, source: Source, source_conn: sa.Connection, cache: sa.Connection, dialect: Dialect, plan: _Plan
    ) -> tuple[sa.Table, sa.Table, bool, Any, Callable[[], Any]]:
        """The general path: source rows as polars batches, bulk-loaded into staging."""
        batches = self._batches(source_conn, source, plan)
        if source.schema() is not None and (fixes := cache_value_fixes(source, dialect)):
            batches = _mapped(batches, lambda frame: frame.with_columns(fixes))
        try:
            self._at("read", "source")
            first = next(batches, None)
            source = self._settle_types(source, first)
            target = target_table(source, dialect)
            self._at("read", "cache")  # the target as it is now
            exists = check_existing(cache, target, dialect, table=self.table.name)
            cache.commit()
            staging = dialect.staging_table(target, suffix=f"_{uuid.uuid4().hex[:8]}")
            loaded_max = self._stage(cache, dialect, staging, first, batches)
        finally:
            batches.close()

        def replace() -> Any:
            dialect.replace_rows(cache, target, staging)
            return loaded_max

        return staging, target, exists, loaded_max, replace

    def _plan(self, source_conn: sa.Connection, source: Source, cache: sa.Connection) -> _Plan:
        """Full or incremental, and the watermark window of an incremental."""
        table = self.table
        self._at("plan", "cache")
        has_synced, last = audit.last_watermark(cache, table.name)
        target_exists = sa.inspect(cache).has_table(table.target)
        cache.commit()
        if not self.update_type.is_incremental:
            return self._planned(_Plan(FULL))
        if not (has_synced and target_exists):
            why = "reset to a full load" if last.full else "never synced before"
            self.log(f"{table.name}: {why}, so this {self.update_type.value} sync loads in full")
            return self._planned(_Plan(FULL))
        assert table.updated_at is not None
        self._at("plan", "source")
        high = source.read_max_watermark(source_conn)
        previous = watermark.decode(last.watermark, source.column(table.updated_at).type, like=high)
        low = None
        if previous is not None and last.exact:
            low = previous  # reset to this watermark: read from it, without the lookback
        elif previous is not None:
            low = watermark.lower_bound(previous, table.lookback_for(self.update_type, self.catalog.defaults))
        if high is None:
            self.log(f"{table.name}: the source has no watermark values; nothing to read")
        return self._planned(_Plan(INCREMENTAL, low=low, high=high, previous=previous))

    def _planned(self, plan: _Plan) -> _Plan:
        self.mode = plan.mode
        return plan

    def _batches(self, source_conn: sa.Connection, source: Source, plan: _Plan) -> Generator[pl.DataFrame]:
        """Source batches in cache types: the table's `jde` transforms run here, whatever the read path."""
        batches = self._read(source_conn, source, plan)
        if source.transform is None:
            return batches
        return _mapped(batches, source.transformed)

    def _read(self, source_conn: sa.Connection, source: Source, plan: _Plan) -> Generator[pl.DataFrame]:
        if plan.mode == INCREMENTAL and plan.high is None:
            return (frame for frame in ())  # a generator, so the caller can close() it
        schema = source.schema()
        if schema is not None and self.table.arrow_read:
            statement = source.select(low=plan.low, high=plan.high)
            fast = self.source_dialect.arrow_batches(
                source_conn,
                statement,
                schema=schema,
                table=self.table.name,
                batch_size=self.catalog.batch_size(self.table),
            )
            if fast is not None:
                return fast  # type: ignore[return-value]
        return read_batches(
            source_conn,
            source.select(low=plan.low, high=plan.high),
            schema=source.schema(),
            batch_size=self.catalog.batch_size(self.table),
            table=self.table.name,
        )

    def _stage(
        self,
        cache: sa.Connection,
        dialect: Dialect,
        staging: sa.Table,
        first: pl.DataFrame | None,
        batches: Iterator[pl.DataFrame],
    ) -> Any:
        """Load every batch into the staging table; returns the highest watermark loaded."""
        loaded_max = None
        updated_at = self.table.updated_at
        with cache.begin():
            staging.create(cache)
            frame = first
            while frame is not None:
                self._at("stage", "cache")
                dialect.bulk_load(cache, staging, frame)
                self.rows_read += frame.height
                if updated_at is not None:
                    loaded_max = watermark.later(loaded_max, frame.get_column(updated_at).max())
                self.log(f"{self.table.name}: {self.rows_read:,} rows read and staged")
                self._at("read", "source")
                frame = next(batches, None)
        return loaded_max

    def _commit(
        self,
        cache: sa.Connection,
        dialect: Dialect,
        attempt: int,
        plan: _Plan,
        target: sa.Table,
        staging: sa.Table,
        exists: bool,
        replace: Callable[[], Any],
        loaded_max: Any,
    ) -> audit.Outcome:
        """The one transaction readers notice: swap or merge, and close the sync_log row."""
        table = self.table
        self._at("swap" if plan.mode == FULL else "merge", "cache")
        with dialect.write_transaction(cache):
            if not exists:
                target.create(cache)
            if plan.mode == FULL:
                try:
                    new_mark = replace()
                except Exception as err:
                    if not dialect.is_duplicate_key(cache, err):
                        raise
                    key = ", ".join(table.primary_key)
                    msg = (
                        f"table '{table.name}': the source holds duplicate (or NULL) primary key values "
                        f"({key}), "
                        f"so the full load was rolled back: {describe_error(err, phase=None)}"
                    )
                    raise DataError(msg, table=table.name) from None
                counts = UpsertCounts(inserted=self.rows_read, updated=0, unchanged=0)
            else:
                assert table.updated_at is not None
                counts = dialect.upsert(
                    cache, target, staging, key=table.primary_key, updated_at=table.updated_at
                )
                new_mark = watermark.later(plan.previous, loaded_max)
            outcome = audit.Outcome(
                mode=plan.mode,
                rows_read=self.rows_read,
                rows_written=counts.written,
                rows_inserted=counts.inserted,
                rows_updated=counts.updated,
                rows_unchanged=counts.unchanged,
                watermark_from=watermark.encode(plan.low),
                watermark_to=watermark.encode(new_mark),
            )
            audit.succeed(cache, attempt, outcome)
            if dialect.capabilities.transactional_ddl:
                self._post_sql(cache, target)
        if not dialect.capabilities.transactional_ddl:
            with cache.begin():
                self._post_sql(cache, target)
        return outcome

    def _post_sql(self, cache: sa.Connection, target: sa.Table) -> None:
        """The catalog's post-processing, `{table}` standing for the quoted cache table."""
        if not self.table.post_sql:
            return
        self._at("post_sql", "cache")
        quoted = cache.dialect.identifier_preparer.format_table(target)
        for statement in self.table.post_sql:
            cache.execute(sa.text(statement.replace("{table}", quoted)))

    def _direct_copy(
        self,
        source: Source,
        source_conn: sa.Connection,
        cache: sa.Connection,
        dialect: Dialect,
        target: sa.Table,
    ) -> bool:
        """Whether the databases can copy the rows themselves (same kind on both ends)."""
        if not self.table.direct_copy or self.table.query is not None or self.table.source_schema is not None:
            return False
        if source.transform is not None:
            return False  # the database cannot apply the `jde` transforms
        kinds = {c.name: c.type.kind for c in source.columns if c.type is not None}
        return dialect.can_copy(source_conn, cache, target, kinds)

    def _max_watermark(self, cache: sa.Connection, table: sa.Table) -> Any:
        if self.table.updated_at is None:
            return None
        return cache.execute(sa.select(sa.func.max(table.c[self.table.updated_at]))).scalar()

    def _settle_types(self, source: Source, first: pl.DataFrame | None) -> Source:
        """A query source takes its column types from its first batch."""
        if source.schema() is not None:
            return source
        if first is None:
            msg = (
                f"table '{self.table.name}': the query returned no rows, so its column types are unknown "
                "and the target cannot be created"
            )
            raise DataError(msg, table=self.table.name)
        types = {
            name: from_polars(dtype, table=self.table.name, column=name)
            for name, dtype in first.schema.items()
        }
        return source.with_types(types)

    def _record_end(self, engine: sa.Engine, dialect: Dialect, attempt: int, err: BaseException) -> None:
        """Close the attempt as failed, or as cancelled when `err` is an interrupt (no Exception:
        KeyboardInterrupt, SystemExit, Dagster's DagsterExecutionInterruptedError)."""
        if is_interrupt(err):
            status, text = audit.CANCELLED, self.cancellation()
        else:
            status = audit.FAILED
            connection = self.connections[self.side] if self.side and not isinstance(err, SyncError) else None
            text = redact(describe_error(err, phase=self.phase, connection=connection), self.secrets)
        try:
            with engine.connect() as conn, dialect.write_transaction(conn):
                audit.fail(conn, attempt, error=text, mode=self.mode, rows_read=self.rows_read, status=status)
        except sa.exc.SQLAlchemyError as audit_err:
            # The cache itself is unreachable; the next sync marks this attempt abandoned.
            name = type(audit_err).__name__
            self.log(f"{self.table.name}: could not record the {status} attempt in sync_log: {name}")


def _mapped(
    batches: Iterator[pl.DataFrame], change: Callable[[pl.DataFrame], pl.DataFrame]
) -> Generator[pl.DataFrame]:
    """Each batch passed through `change`; closing this closes the reader underneath."""
    try:
        for frame in batches:
            yield change(frame)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def describe_error(err: BaseException, *, phase: str | None, connection: str | None = None) -> str:
    """One line for sync_log and the UI: the driver's message without the SQL statement, after the
    phase and the connection it happened on, when known."""
    if isinstance(err, sa.exc.DBAPIError) and err.orig is not None:
        text = f"{type(err.orig).__name__}: {str(err.orig).strip()}"
    elif isinstance(err, SyncError):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    if connection:
        text = f"{connection}: {text}"
    return f"{phase} phase: {text}" if phase else text
