"""One sync of one table: plan, stream into staging, then swap or merge in one transaction.

Nothing is visible to readers of the cache until that last transaction commits, and the same
transaction closes the sync_log row; a failure, cancellation or kill leaves the target as it was.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from sync_assets.catalog.models import Catalog, TableSpec, UpdateType
from sync_assets.dialects import Dialect
from sync_assets.errors import DataError, SyncError, UpdateTypeNotAllowed
from sync_assets.resources.database import SqlDatabase
from sync_assets.sync import audit, watermark
from sync_assets.sync.reader import read_batches
from sync_assets.sync.redact import redact
from sync_assets.sync.source import Source, describe
from sync_assets.sync.target import check_existing, target_table
from sync_assets.sync.types import from_polars

FULL, INCREMENTAL = "full", "incremental"
Log = Callable[[str], None]


@dataclass(frozen=True)
class SyncResult:
    table: str
    update_type: UpdateType
    mode: str
    rows_read: int
    rows_inserted: int
    rows_updated: int
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
) -> SyncResult:
    """Sync `table` for `update_type`; raises SyncError (secrets masked) when it cannot."""
    if update_type.is_incremental and table.updated_at is None:
        msg = (
            f"table '{table.name}' has no `updated_at` column, so it can only be synced by the "
            f"'mass' partition; '{update_type.value}' was asked for and nothing was changed"
        )
        raise UpdateTypeNotAllowed(msg, table=table.name)
    secrets = source_db.secrets(table=table.name) + cache_db.secrets(table=table.name)
    try:
        with (
            source_db.engine(role="source", table=table.name) as (source_engine, source_dialect),
            cache_db.engine(role="cache", table=table.name) as (cache_engine, cache_dialect),
        ):
            job = _Sync(catalog, table, update_type, run_id, log, secrets)
            return job.run(source_engine, source_dialect, cache_engine, cache_dialect)
    except SyncError as err:
        err.args = (redact(str(err), secrets),)
        raise
    except sa.exc.SQLAlchemyError as err:  # before the attempt was recorded: connecting, sync_log
        text = redact(describe_error(err, phase="connect"), secrets)
        msg = f"table '{table.name}' ({update_type.value}): {text}"
        raise SyncError(msg, table=table.name) from None


class _Sync:
    def __init__(
        self,
        catalog: Catalog,
        table: TableSpec,
        update_type: UpdateType,
        run_id: str,
        log: Log,
        secrets: list[str],
    ) -> None:
        self.catalog, self.table, self.update_type = catalog, table, update_type
        self.run_id, self.log, self.secrets = run_id, log, secrets
        self.rows_read = 0
        self.mode: str | None = None
        self.phase = "plan"

    def run(
        self,
        source_engine: sa.Engine,
        source_dialect: Dialect,
        cache_engine: sa.Engine,
        cache_dialect: Dialect,
    ) -> SyncResult:
        started = time.monotonic()
        audit.ensure_table(cache_engine)
        with cache_engine.connect() as cache:
            with cache_dialect.write_transaction(cache):
                attempt = audit.start(
                    cache,
                    table=self.table.name,
                    target=self.table.target,
                    update_type=self.update_type.value,
                    run_id=self.run_id,
                    retention_days=self.catalog.defaults.sync_log_retention_days,
                )
            try:
                with source_engine.connect() as source_conn:
                    result = self._sync(source_conn, source_dialect, cache, cache_dialect, attempt, started)
            except BaseException as err:  # cancellation and kills of the step included
                self._record_failure(cache_engine, cache_dialect, attempt, err)
                if isinstance(err, sa.exc.SQLAlchemyError):
                    text = redact(describe_error(err, phase=self.phase), self.secrets)
                    msg = f"table '{self.table.name}' ({self.update_type.value}): {text}"
                    raise SyncError(msg, table=self.table.name) from None
                raise
        return result

    def _sync(
        self,
        source_conn: sa.Connection,
        source_dialect: Dialect,
        cache: sa.Connection,
        cache_dialect: Dialect,
        attempt: int,
        started: float,
    ) -> SyncResult:
        table = self.table
        source = describe(source_conn, table, source_dialect)
        has_synced, last = audit.last_watermark(cache, table.name)
        cache.commit()
        low = high = previous = None
        self.mode = FULL
        if self.update_type.is_incremental and has_synced and sa.inspect(cache).has_table(table.target):
            assert table.updated_at is not None
            self.mode = INCREMENTAL
            high = source_conn.execute(source.max_watermark()).scalar()
            previous = watermark.decode(last, source.column(table.updated_at).type, like=high)
            if previous is not None:
                low = watermark.lower_bound(
                    previous, table.lookback_for(self.update_type, self.catalog.defaults)
                )
        elif self.update_type.is_incremental:
            self.log(
                f"{table.name}: never synced before, so this {self.update_type.value} sync loads in full"
            )
        if self.mode == INCREMENTAL and high is None:
            self.log(f"{table.name}: the source has no watermark values; nothing to read")

        batches = read_batches(
            source_conn,
            source.select(low=low, high=high),
            schema=source.schema(),
            batch_size=self.catalog.batch_size(table),
            table=table.name,
        )
        self.phase = "read"
        first = next(batches, None) if not (self.mode == INCREMENTAL and high is None) else None
        source = self._settle_types(source, first)
        wanted = target_table(source, cache_dialect)
        exists = check_existing(cache, wanted, cache_dialect, table=table.name)
        cache.commit()
        staging = cache_dialect.staging_table(wanted, suffix=f"_{uuid.uuid4().hex[:8]}")
        loaded_max = None
        with cache.begin():
            staging.create(cache)
            frame = first
            while frame is not None:
                self.phase = "stage"
                cache_dialect.bulk_load(cache, staging, frame)
                self.rows_read += frame.height
                if table.updated_at is not None:
                    loaded_max = watermark.later(loaded_max, frame.get_column(table.updated_at).max())
                self.log(f"{table.name}: {self.rows_read:,} rows read and staged")
                self.phase = "read"
                frame = next(batches, None)
        new_mark = watermark.later(previous, loaded_max) if self.mode == INCREMENTAL else loaded_max
        self.phase = "swap" if self.mode == FULL else "merge"
        with cache_dialect.write_transaction(cache):
            if not exists:
                wanted.create(cache)
            if self.mode == FULL:
                try:
                    cache_dialect.replace_rows(cache, wanted, staging)
                except sa.exc.IntegrityError as err:
                    key = ", ".join(table.primary_key)
                    msg = (
                        f"table '{table.name}': the source holds duplicate primary key values ({key}), "
                        f"so the full load was rolled back: {describe_error(err, phase=None)}"
                    )
                    raise DataError(msg, table=table.name) from None
                inserted, updated = self.rows_read, 0
            else:
                assert table.updated_at is not None
                inserted, updated = cache_dialect.upsert(
                    cache, wanted, staging, key=table.primary_key, updated_at=table.updated_at
                )
            outcome = audit.Outcome(
                mode=self.mode,
                rows_read=self.rows_read,
                rows_written=inserted + updated,
                rows_inserted=inserted,
                rows_updated=updated,
                watermark_from=watermark.encode(low),
                watermark_to=watermark.encode(new_mark),
            )
            audit.succeed(cache, attempt, outcome)
        with cache.begin():
            staging.drop(cache)
            row_count = cache.execute(sa.select(sa.func.count()).select_from(wanted)).scalar_one()
        return SyncResult(
            table=table.name,
            update_type=self.update_type,
            mode=self.mode,
            rows_read=self.rows_read,
            rows_inserted=inserted,
            rows_updated=updated,
            row_count=row_count,
            watermark_from=outcome.watermark_from,
            watermark_to=outcome.watermark_to,
            seconds=time.monotonic() - started,
            target_table=wanted,
        )

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

    def _record_failure(self, engine: sa.Engine, dialect: Dialect, attempt: int, err: BaseException) -> None:
        text = redact(describe_error(err, phase=self.phase), self.secrets)
        try:
            with engine.connect() as conn, dialect.write_transaction(conn):
                audit.fail(conn, attempt, error=text, mode=self.mode, rows_read=self.rows_read)
        except sa.exc.SQLAlchemyError as audit_err:
            # The cache itself is unreachable; the next sync marks this attempt abandoned.
            self.log(
                f"{self.table.name}: could not record the failure in sync_log: {type(audit_err).__name__}"
            )


def describe_error(err: BaseException, *, phase: str | None) -> str:
    """One line for sync_log and the UI: the driver's message without the SQL statement."""
    if isinstance(err, sa.exc.DBAPIError) and err.orig is not None:
        text = f"{type(err.orig).__name__}: {str(err.orig).strip()}"
    elif isinstance(err, SyncError):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return f"{phase} phase: {text}" if phase else text


