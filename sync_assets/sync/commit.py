"""The one transaction readers of the cache notice: swap or merge, and close the sync_log row."""

from __future__ import annotations

import sqlalchemy as sa

from sync_assets.catalog.models import TableSpec
from sync_assets.dialects import CacheDialect
from sync_assets.dialects.ddl import AddColumn
from sync_assets.dialects.upsert import UpsertCounts
from sync_assets.sources.base import Source
from sync_assets.sync import audit, watermark
from sync_assets.sync.deletes import Deleted, delete_missing
from sync_assets.sync.plan import FULL, Plan
from sync_assets.sync.progress import Progress
from sync_assets.sync.stage import Staged, duplicate_keys


def commit(
    progress: Progress,
    table: TableSpec,
    cache: sa.Connection,
    dialect: CacheDialect,
    attempt: int,
    plan: Plan,
    staged: Staged,
    source: Source,
) -> tuple[audit.Outcome, Deleted]:
    """Replace (full) or upsert (incremental) the target from `staged`, delete what the source no
    longer has (`deletes`), and record the outcome in the same transaction; the catalog's
    `post_sql` runs in it too where DDL is transactional."""
    progress.at("swap" if plan.mode == FULL else "merge", "cache")
    target = staged.target
    with dialect.write_transaction(cache):
        if not staged.target_exists:
            target.create(cache)
        for column in staged.added:
            cache.execute(AddColumn(target, column))
        if plan.mode == FULL:
            try:
                new_mark = staged.reload()
            except Exception as err:
                if not dialect.is_duplicate_key(cache, err):
                    raise
                raise duplicate_keys(table, err) from None
            counts = UpsertCounts(inserted=progress.rows_read, updated=0, unchanged=0)
            deleted = Deleted()
        else:
            counts = dialect.upsert(
                cache, target, staged.staging, key=table.primary_key, updated_at=table.updated_at
            )
            new_mark = watermark.later(plan.previous, staged.loaded_max)
            deleted = delete_missing(progress, table, cache, target, source, plan)
            progress.at("merge", "cache")
        outcome = audit.Outcome(
            mode=plan.mode,
            rows_read=progress.rows_read,
            rows_written=counts.written,
            rows_inserted=counts.inserted,
            rows_updated=counts.updated,
            rows_unchanged=counts.unchanged,
            watermark_from=watermark.encode(plan.low),
            watermark_to=watermark.encode(new_mark),
            rows_deleted=deleted.rows,
        )
        source.record(cache, full=plan.mode == FULL)
        audit.succeed(cache, attempt, outcome)
        if dialect.capabilities.transactional_ddl:
            _post_sql(progress, table, cache, target)
    if not dialect.capabilities.transactional_ddl:
        with cache.begin():
            _post_sql(progress, table, cache, target)
    return outcome, deleted


def _post_sql(progress: Progress, table: TableSpec, cache: sa.Connection, target: sa.Table) -> None:
    """The catalog's post-processing, `{table}` standing for the quoted cache table."""
    if not table.post_sql:
        return
    progress.at("post_sql", "cache")
    quoted = cache.dialect.identifier_preparer.format_table(target)
    for statement in table.post_sql:
        cache.execute(sa.text(statement.replace("{table}", quoted)))
