"""Rows the source no longer has, removed from the cache (or stamped) in the sync's own transaction.

A watermark incremental finds them after its upsert, inside the commit's transaction: the cache
then holds every row the source delivered, so a key range where the cache counts more rows than
the source holds a deletion (sync/key_ranges.py narrows it to its keys). `change_detection: hash`
found them while planning, with the rows to fetch. Either way each candidate is looked up in the
source once more before it goes, and two guards stop a sync that would empty the cache by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from sync_assets.catalog.models import TableSpec
from sync_assets.errors import DataError
from sync_assets.sources.base import Source
from sync_assets.sync import audit
from sync_assets.sync.key_ranges import (
    Differences,
    comparable,
    compare,
    has_rows,
    key_chunks,
    matching,
    present,
)
from sync_assets.sync.plan import Plan, cache_side
from sync_assets.sync.progress import Progress


@dataclass(frozen=True)
class Deleted:
    rows: int = 0
    hashes_compared: int = 0  # keys listed from both sides to find them


def delete_missing(
    progress: Progress, table: TableSpec, cache: sa.Connection, target: sa.Table, source: Source, plan: Plan
) -> Deleted:
    """Delete (or stamp) the target's rows that are gone from the source; inside the caller's
    transaction, after its upsert. Raises DataError, changing nothing, past a guard."""
    deletes = table.deletes
    compared = source.compared()
    if deletes is None or compared is None:
        return Deleted()
    found = plan.changes
    if found is None:
        cached = cache_side(cache, target, table, hashed=False)
        if not has_rows(cached):
            return Deleted()  # nothing cached, nothing to delete
        progress.at("deletes", None)
        found = compare(compared, cached)
    candidates = found.missing
    if candidates:
        progress.at("deletes", "source")
        still_there = present(compared, candidates)
        candidates = [k for k in candidates if comparable(k) not in still_there]
    _guard(table, found, len(candidates))
    progress.at("deletes", "cache")
    key = [target.c[k] for k in table.primary_key]
    rows = 0
    for chunk in key_chunks(candidates, len(key)):
        statement = _remove(target, table).where(matching(key, chunk))
        rows += cache.execute(statement).rowcount
    return Deleted(rows, found.hashes_compared)


def _remove(target: sa.Table, table: TableSpec) -> sa.Delete | sa.Update:
    assert table.deletes is not None
    soft = table.deletes.soft_column
    if soft is None:
        return sa.delete(target)
    return sa.update(target).values({soft: audit.now()}).where(target.c[soft].is_(None))


def _guard(table: TableSpec, found: Differences, deleting: int) -> None:
    """A source read that returned nothing, or deletions past `max_delete_ratio`, fail the sync."""
    if not deleting:
        return
    assert table.deletes is not None
    ratio = table.deletes.max_delete_ratio
    cached = found.cache_rows
    if found.source_rows == 0:
        msg = (
            f"table '{table.name}': the source returned no rows at all, so none of the {cached:,} cached "
            "rows were deleted and nothing was changed, upserts included (check the source table and "
            "its connection; if the table was emptied on purpose, run a mass sync)"
        )
        raise DataError(msg, table=table.name)
    if deleting > ratio * cached:
        share = deleting / cached if cached else 1.0
        msg = (
            f"table '{table.name}': {deleting:,} of the {cached:,} cached rows ({share:.1%}) are gone from "
            f"the source, more than deletes.max_delete_ratio ({ratio:.0%}) allows; nothing was changed, "
            "upserts included (if the deletions are real, raise `deletes.max_delete_ratio` for this table "
            "or run a mass sync)"
        )
        raise DataError(msg, table=table.name)
