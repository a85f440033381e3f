"""Rows from the source into the cache, by one of two paths, the target untouched until the commit.

The general path streams the source's polars batches through the cache's bulk load. A direct
copy (same kind of database on both ends) lets the databases move the rows themselves. An
incremental lands in a staging table now, for the commit's upsert; a full load is written once,
inside the commit's transaction, straight into the table the reload swaps in (no staging table
copied a second time). Where the cache's loader writes on a connection of its own, both fill a
committed table before the commit instead: a fresh table the commit swaps in, or a heap it
merges from. `Staged` says how the commit gets its rows.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl
import sqlalchemy as sa

from sync_assets.batches import mapped
from sync_assets.catalog.models import TableSpec
from sync_assets.dialects import CacheDialect
from sync_assets.errors import DataError, UnsupportedType, describe_error
from sync_assets.sources.base import DirectCopy, Log, Source
from sync_assets.sync import watermark
from sync_assets.sync.plan import FULL, Plan
from sync_assets.sync.progress import Progress
from sync_assets.sync.target import (
    cache_value_fixes,
    check_existing,
    columns_to_add,
    existing_target,
    target_table,
)
from sync_assets.types import ColumnType, from_sqlalchemy


@dataclass(frozen=True)
class Staged:
    """What a sync staged, and how its commit uses it.

    An incremental merges `staging` into `target`; a full load calls `reload` inside the commit's
    transaction, which replaces the target's rows and returns the new watermark (and has no
    staging table).
    """

    target: sa.Table
    staging: sa.Table | None
    target_exists: bool
    loaded_max: Any  # the highest watermark staged
    reload: Callable[[], Any]
    added: list[sa.Column[Any]]  # change-detection columns the existing target gets first


@dataclass(frozen=True)
class Stager:
    """The cache side of one sync, and the table it writes."""

    progress: Progress
    table: TableSpec
    cache: sa.Connection
    dialect: CacheDialect
    log: Log

    def stage(self, source: Source, plan: Plan, session: contextlib.ExitStack) -> Staged:
        target = target_table(source, self.dialect) if source.typed else None
        copy = source.direct_copy(self.cache, self.dialect, target) if target is not None else None
        if target is not None and copy is not None:
            return self._copy_directly(copy, plan, target, session)
        return self._stage_batches(source, plan, session)

    def _copy_directly(
        self, copy: DirectCopy, plan: Plan, target: sa.Table, session: contextlib.ExitStack
    ) -> Staged:
        """The rows never pass through Python objects.

        An incremental lands in staging now; a full reload goes straight into the target inside
        the commit's transaction, where readers still see the old rows until the commit.
        """
        cache, dialect, progress = self.cache, self.dialect, self.progress
        exists = self._check_existing(target)
        added = columns_to_add(cache, target, self.table.change_columns)
        cache.commit()
        session.enter_context(copy.session())
        staging, loaded_max = None, None
        if plan.mode != FULL:
            staging = dialect.staging_table(target, suffix=f"_{uuid.uuid4().hex[:8]}")
            with cache.begin():
                staging.create(cache)
                if plan.window is not None and not plan.reads_nothing:
                    progress.at("copy", None)
                    progress.rows_read = copy.copy(plan.window, staging)
                loaded_max = self._max_watermark(staging)

        def reload() -> Any:
            def fill(dest: sa.Table) -> int:
                # The reload builds keys and indexes and renames around this: the swap proper.
                progress.at("copy", None)
                rows = copy.copy(None, dest)
                progress.at("swap", "cache")
                return rows

            progress.rows_read = dialect.reload(cache, target, fill)
            return self._max_watermark(target)

        return Staged(target, staging, exists, loaded_max, reload, added)

    def _stage_batches(self, source: Source, plan: Plan, session: contextlib.ExitStack) -> Staged:
        """The general path: source batches, bulk-loaded into staging (incremental) or, inside the
        commit, into the reloaded table (full). The reader stays open until the commit is done."""
        cache, dialect, progress = self.cache, self.dialect, self.progress
        progress.at("read", "cache")  # the target as it is now
        existing = None if source.typed else existing_target(cache, self.table.target)
        if existing is not None:
            source.adopt(_neutral_types(existing, self.table.name))
        cache.commit()  # no transaction of the cache stays open while the source is read
        batches = _nothing() if plan.reads_nothing else source.batches(plan.window)
        if source.typed and (fixes := cache_value_fixes(source, dialect)):
            batches = mapped(batches, lambda frame: frame.with_columns(fixes))
        session.callback(batches.close)
        progress.at("read", "source")
        first = next(batches, None)
        progress.at("read", "cache")  # the target as it is now
        if first is None and not source.typed and existing is not None:
            target, exists = existing, True  # nothing read, nothing to learn types from: they stay
        else:
            source = source.settled(first)
            target = target_table(source, dialect)
            exists = self._check_existing(target)
        added = columns_to_add(cache, target, self.table.change_columns)
        cache.commit()
        # Whether more than the first batch follows (read now: it would be next anyway).
        progress.at("read", "source")
        second = None if first is None else next(batches, None)
        progress.at("read", "cache")
        if second is not None:
            batches = itertools.chain([second], batches)
        if plan.mode == FULL:
            fresh = dialect.fresh_table(cache, target, several_batches=second is not None)
            if fresh is not None:
                return self._load_fresh(target, fresh, exists, added, first, batches, session)

            def reload() -> Any:
                loaded_max = None

                def fill(dest: sa.Table) -> int:
                    nonlocal loaded_max
                    loaded_max = self._load(dest, first, batches, phase="load")
                    progress.at("swap", "cache")
                    return progress.rows_read

                dialect.reload(cache, target, fill)
                return loaded_max

            return Staged(target, None, exists, None, reload, added)
        heap = dialect.separate_staging(cache, target, several_batches=second is not None)
        if heap is not None:
            # Dropped after the commit's merge, or here when the sync stops before it succeeds.
            session.callback(lambda: progress.committed or _drop_quietly(cache, heap))
            loaded_max = self._load(heap, first, batches, phase="stage", separately=True)
            return Staged(target, heap, exists, loaded_max, lambda: loaded_max, added)
        staging = dialect.staging_table(target, suffix=f"_{uuid.uuid4().hex[:8]}")
        with cache.begin():
            staging.create(cache)
            loaded_max = self._load(staging, first, batches, phase="stage")
        return Staged(target, staging, exists, loaded_max, lambda: loaded_max, added)

    def _load_fresh(
        self,
        target: sa.Table,
        fresh: sa.Table,
        exists: bool,
        added: list[sa.Column[Any]],
        first: pl.DataFrame | None,
        batches: Iterator[pl.DataFrame],
        session: contextlib.ExitStack,
    ) -> Staged:
        """A full load through a loader with a connection of its own (TDS bulk copy): the batches
        fill a committed fresh table now, the commit swaps it in. A fresh table left by a failure
        is dropped on the way out (by the next sync, after a kill)."""
        cache, dialect = self.cache, self.dialect
        # After a commit the swap has consumed it (a no-op); after a failed commit it is still there.
        session.callback(_drop_quietly, cache, fresh)
        try:
            loaded_max = self._load(fresh, first, batches, phase="load", separately=True)
        except Exception as err:
            if dialect.is_duplicate_key(cache, err):
                raise duplicate_keys(self.table, err) from None
            raise

        def reload() -> Any:
            self.progress.at("swap", "cache")
            dialect.swap_in(cache, target, fresh)
            return loaded_max

        return Staged(target, None, exists, None, reload, added)

    def _check_existing(self, target: sa.Table) -> bool:
        return check_existing(
            self.cache, target, self.dialect, table=self.table.name, addable=self.table.change_columns
        )

    def _load(
        self,
        dest: sa.Table,
        first: pl.DataFrame | None,
        batches: Iterator[pl.DataFrame],
        *,
        phase: str,
        separately: bool = False,
    ) -> Any:
        """Bulk-load every batch into `dest` (in `phase`: staging, or a reload's load), in the
        caller's transaction, or `separately` by the dialect's own loader; returns the highest
        watermark loaded."""
        progress, dialect = self.progress, self.dialect
        loaded_max = None
        updated_at = self.table.updated_at
        done = "staged" if phase == "stage" else "loaded"

        def counted() -> Generator[pl.DataFrame]:
            """Each batch as the cache takes it; counted once it has been written."""
            nonlocal loaded_max
            frame = first
            while frame is not None:
                progress.at(phase, "cache")
                yield frame
                progress.rows_read += frame.height
                if updated_at is not None:
                    loaded_max = watermark.later(loaded_max, frame.get_column(updated_at).max())
                self.log(f"{self.table.name}: {progress.rows_read:,} rows read and {done}")
                progress.at("read", "source")
                frame = next(batches, None)

        if separately:
            dialect.load_separately(self.cache, dest, counted())
        else:
            for frame in counted():
                dialect.bulk_load(self.cache, dest, frame)
        return loaded_max

    def _max_watermark(self, table: sa.Table) -> Any:
        if self.table.updated_at is None:
            return None
        return self.cache.execute(sa.select(sa.func.max(table.c[self.table.updated_at]))).scalar()


def duplicate_keys(table: TableSpec, err: BaseException) -> DataError:
    key = ", ".join(table.primary_key)
    return DataError(
        f"table '{table.name}': the source holds duplicate (or NULL) primary key values "
        f"({key}), so the full load was rolled back: {describe_error(err, phase=None)}",
        table=table.name,
    )


def _drop_quietly(cache: sa.Connection, table: sa.Table) -> None:
    """Drop `table` if it is there; a cache gone away leaves it to the next sync."""
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        if cache.in_transaction():
            cache.rollback()
        with cache.begin():
            cache.execute(sa.schema.DropTable(table, if_exists=True))


def _nothing() -> Generator[pl.DataFrame]:
    yield from ()


def _neutral_types(table: sa.Table, name: str) -> dict[str, ColumnType]:
    """The cache table's column types, as neutral types (a column whose type does not map is left
    to the source)."""
    found = {}
    for column in table.columns:
        try:
            found[column.name] = from_sqlalchemy(column.type, table=name, column=column.name)
        except UnsupportedType:
            continue
    return found
