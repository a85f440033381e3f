"""Full or incremental, and the watermark window an incremental reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync_assets.catalog.models import Catalog, TableSpec, UpdateType
from sync_assets.sources.base import Log, Source, Window
from sync_assets.sync import audit, watermark
from sync_assets.sync.progress import Progress

FULL, INCREMENTAL = audit.FULL, audit.INCREMENTAL


@dataclass(frozen=True)
class Plan:
    mode: str
    low: Any = None  # first watermark read (lookback included)
    high: Any = None  # source's max watermark, read before extraction
    previous: Any = None  # watermark of the last successful sync
    bounded: bool = True  # `high` was read before extraction (an API has none to read)

    @property
    def window(self) -> Window | None:
        """What an incremental reads; None for a full load (every row)."""
        return Window(self.low, self.high) if self.mode == INCREMENTAL else None

    @property
    def reads_nothing(self) -> bool:
        """An incremental of a source that has no watermark values yet."""
        return self.mode == INCREMENTAL and self.bounded and self.high is None


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


def _planned(progress: Progress, plan: Plan) -> Plan:
    progress.mode = plan.mode
    return plan
