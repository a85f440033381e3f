"""Full or incremental, and the watermark window an incremental reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync_assets.catalog.changes import HASH_COLUMN
from sync_assets.catalog.models import Catalog, TableSpec, UpdateType
from sync_assets.sources.base import Log, Source, Window
from sync_assets.sync import audit, watermark
from sync_assets.sync.key_ranges import Differences, Side, compare, has_rows
from sync_assets.sync.progress import Progress
from sync_assets.sync.target import existing_target

FULL, INCREMENTAL = audit.FULL, audit.INCREMENTAL


@dataclass(frozen=True)
class Plan:
    mode: str
    low: Any = None  # first watermark read (lookback included)
    high: Any = None  # source's max watermark, read before extraction
    previous: Any = None  # watermark of the last successful sync
    bounded: bool = True  # `high` was read before extraction (an API has none to read)
    changes: Differences | None = None  # `change_detection: hash`: the keys that differ

    @property
    def window(self) -> Window | None:
        """What an incremental reads; None for a full load (every row)."""
        if self.mode != INCREMENTAL:
            return None
        if self.changes is not None:
            return Window(keys=tuple(self.changes.changed))
        return Window(self.low, self.high)

    @property
    def reads_nothing(self) -> bool:
        """An incremental of a source that has no watermark values yet, or whose hashes all match."""
        if self.mode != INCREMENTAL:
            return False
        if self.changes is not None:
            return not self.changes.changed
        return self.bounded and self.high is None


def plan_sync(
    progress: Progress,
    catalog: Catalog,
    table: TableSpec,
    update_type: UpdateType,
    source: Source,
    cache: sa.Connection,
    log: Log,
) -> Plan:
    progress.at("plan", "cache")
    source.prepare(cache)
    has_synced, last = audit.last_watermark(cache, table.name)
    target_exists = sa.inspect(cache).has_table(table.target)
    cache.commit()
    if not update_type.is_incremental:
        return _planned(progress, Plan(FULL))
    if not (has_synced and target_exists):
        why = "reset to a full load" if last.full else "never synced before"
        log(f"{table.name}: {why}, so this {update_type.value} sync loads in full")
        return _planned(progress, Plan(FULL))
    if table.by_hash:
        return _planned(progress, _by_hash(progress, table, source, cache, log, last))
    assert table.updated_at is not None
    progress.at("plan", "source")
    high = source.max_watermark() if source.upper_bound_known else None
    previous = watermark.decode(last.watermark, source.column(table.updated_at).type, like=high)
    low = None
    if previous is not None and last.exact:
        low = previous  # reset to this watermark: read from it, without the lookback
    elif previous is not None:
        low = watermark.lower_bound(previous, table.lookback_for(update_type, catalog.defaults))
    if high is None and source.upper_bound_known:
        log(f"{table.name}: the source has no watermark values; nothing to read")
    bounded = source.upper_bound_known
    return _planned(progress, Plan(INCREMENTAL, low=low, high=high, previous=previous, bounded=bounded))


def _by_hash(
    progress: Progress, table: TableSpec, source: Source, cache: sa.Connection, log: Log, last: audit.Mark
) -> Plan:
    """The keys whose row hashes differ, found by key range (sync/key_ranges.py)."""
    progress.at("compare", "cache")
    target = existing_target(cache, table.target)
    compared = source.compared()
    if target is None or HASH_COLUMN not in target.c or compared is None:
        cache.commit()
        log(f"{table.name}: the cache table holds no row hashes yet, so this sync loads in full")
        return Plan(FULL)
    if not has_rows(cache_side(cache, target, table, hashed=True)):
        cache.commit()  # every source key would be listed: a full load is the same, and bounded
        log(f"{table.name}: the cache table is empty, so this sync loads in full")
        return Plan(FULL)
    progress.at("compare", None)
    changes = compare(compared, cache_side(cache, target, table, hashed=True))
    cache.commit()
    log(
        f"{table.name}: {changes.ranges_compared:,} key ranges compared, {changes.hashes_compared:,} "
        f"row hashes listed; {len(changes.changed):,} rows to fetch, "
        f"{len(changes.missing):,} gone from the source"
    )
    high, previous = None, None
    if table.updated_at is not None:  # kept for the lag check, not for the read
        progress.at("plan", "source")
        high = source.max_watermark() if source.upper_bound_known else None
        previous = watermark.decode(last.watermark, source.column(table.updated_at).type, like=high)
    return Plan(INCREMENTAL, high=high, previous=previous, changes=changes)


def cache_side(cache: sa.Connection, target: sa.Table, table: TableSpec, *, hashed: bool) -> Side:
    """The cache's side of a key-range comparison: its live rows (soft-deleted ones left out)."""
    soft = table.deletes.soft_column if table.deletes else None
    return Side(
        cache,
        target,
        [target.c[k] for k in table.primary_key],
        target.c[HASH_COLUMN] if hashed else None,
        [target.c[soft].is_(None)] if soft else [],
    )


def _planned(progress: Progress, plan: Plan) -> Plan:
    progress.mode = plan.mode
    return plan
