"""The reconciliation of a REST table: the record count its API reports against the cache's rows.

An API gives no count of a watermark range, so this compares the whole endpoint with the whole
cache table: records added at the source since the last sync, or deleted there (an incremental
never deletes), show as a difference, a warning.
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from sync_assets.catalog.models import TableSpec
from sync_assets.checks.common import (
    CheckResources,
    TableCheck,
    connect,
    not_synced,
    table_check,
)
from sync_assets.checks.reconcile import RECONCILIATION, WARN
from sync_assets.errors import SyncError
from sync_assets.redact import redact
from sync_assets.resources.rest import RestApi


def api_total_checks(table: TableSpec, asset_key: dg.AssetKey) -> list[TableCheck]:
    """A count reconciliation, where the table says where its API reports a total."""
    if table.endpoint is None or table.paginate.total_path is None:
        return []

    def evaluate(resources: CheckResources) -> dg.AssetCheckResult:
        with connect(resources, table, source=False) as opened:
            target = opened.target(table)
            if target is None:
                return not_synced(table)
            cache_rows = opened.cache.execute(sa.select(sa.func.count()).select_from(target)).scalar_one()
        api = resources.source
        assert isinstance(api, RestApi)
        try:
            with api.open_source(table, batch_size=1, log=lambda _: None) as source:
                api_rows = source.reported_total()
        except SyncError as err:
            raise dg.Failure(
                description=redact(str(err), api.secrets(table=table.name)), allow_retries=False
            ) from None
        if api_rows == cache_rows:
            description = f"the API reports {api_rows} records and the cache holds as many"
        else:
            description = f"the API reports {api_rows} records, the cache holds {cache_rows}"
        return dg.AssetCheckResult(
            passed=api_rows == cache_rows,
            severity=WARN,
            metadata={"source_rows": api_rows, "cache_rows": cache_rows, "difference": cache_rows - api_rows},
            description=f"table '{table.name}': {description}",
        )

    check = table_check(
        RECONCILIATION,
        asset_key,
        evaluate,
        description="The record count the API reports equals the cache's row count",
    )
    return [check]
