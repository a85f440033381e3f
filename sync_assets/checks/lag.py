"""Data lag: how far the cache's newest row trails the source's, by their `updated_at`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from sync_assets.catalog.models import Catalog, TableSpec
from sync_assets.checks.common import (
    CheckResources,
    TableCheck,
    connect,
    missing_columns,
    not_synced,
    shown,
    table_check,
)

SOURCE_LAG = "source_lag"
DEFAULT_MAX_LAG = timedelta(days=1)
WARN = dg.AssetCheckSeverity.WARN


def lag_checks(catalog: Catalog, table: TableSpec, asset_key: dg.AssetKey) -> list[TableCheck]:
    """A lag check for tables with a watermark; a mass-only table has no "newest row" to compare."""
    if table.updated_at is None:
        return []
    max_lag = max_lag_of(catalog, table)
    updated_at = table.updated_at

    def evaluate(resources: CheckResources) -> dg.AssetCheckResult:
        with connect(resources, table, source=True) as opened:
            target = opened.target(table)
            if target is None:
                return not_synced(table)
            absent = missing_columns(table, target, [updated_at], severity=WARN, what="(updated_at)")
            if absent is not None:
                return absent
            source_conn, _ = opened.require_source()
            source_max = opened.source_table(table).read_max_watermark(source_conn)
            cache_max = opened.cache.execute(sa.select(sa.func.max(target.c[updated_at]))).scalar()
        return _judge(table, max_lag, source_max=source_max, cache_max=cache_max)

    return [
        table_check(
            SOURCE_LAG,
            asset_key,
            evaluate,
            description=f"The cache's newest {updated_at} trails the source's by at most {max_lag}",
        )
    ]


def max_lag_of(catalog: Catalog, table: TableSpec) -> timedelta:
    """The table's max_lag, else the catalog's, else the freshness fail window, else one day."""
    freshness = table.freshness_for(catalog.defaults)
    return (
        table.max_lag
        or catalog.defaults.max_lag
        or (freshness.fail_after if freshness is not None else None)
        or DEFAULT_MAX_LAG
    )


def _judge(table: TableSpec, max_lag: timedelta, *, source_max: Any, cache_max: Any) -> dg.AssetCheckResult:
    metadata: dict[str, Any] = {
        "source_max": shown(source_max),
        "cache_max": shown(cache_max),
        "max_lag_seconds": max_lag.total_seconds(),
    }

    def result(passed: bool, description: str) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            passed=passed,
            severity=WARN,
            metadata=metadata,
            description=f"table '{table.name}': {description}",
        )

    if source_max is None:
        return result(True, "the source holds no rows")
    if cache_max is None:
        return result(
            False, f"the cache holds no rows; the source's newest {table.updated_at} is {source_max}"
        )
    newest, cached = _instant(source_max), _instant(cache_max)
    if newest is None or cached is None:
        behind = _before(cache_max, source_max)
        state = "behind" if behind else "level with or ahead of"
        return result(
            not behind, f"{table.updated_at} is not a time; the cache ({cache_max}) is {state} the source"
        )
    lag = max(newest - cached, timedelta(0))
    metadata["lag_seconds"] = lag.total_seconds()
    verdict = "within" if lag <= max_lag else "more than"
    return result(lag <= max_lag, f"the cache trails the source by {lag}, {verdict} the allowed {max_lag}")


def _before(a: Any, b: Any) -> bool:
    try:
        return bool(a < b)
    except TypeError:
        return str(a) < str(b)


def _instant(value: Any) -> datetime | None:
    """A watermark as a naive UTC datetime, so a naive cache value and an aware source one compare."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    return None
