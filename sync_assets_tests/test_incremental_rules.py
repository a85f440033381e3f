"""Deduplication, first incrementals, mass-only tables and query sources."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from sync_assets.assets.factory import resources_for
from sync_assets.catalog.loader import load_catalog
from sync_assets.catalog.models import UpdateType
from sync_assets.errors import UpdateTypeNotAllowed
from sync_assets.sync.runner import run_sync
from sync_assets_tests.helpers import (
    BASE_TIME,
    create_source,
    make_harness,
    materialization,
    order_row,
    read_rows,
    sync_log_rows,
    upsert_source,
)

ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql"])
def test_duplicate_keys_in_one_batch_keep_the_latest(tmp_path, monkeypatch, make_database, cache_kind):
    """Legacy tables without a real key can hold several versions of a row: the newest wins."""
    source_url, cache_url = make_database("postgresql"), make_database(cache_kind)
    table = create_source(source_url, [order_row(i) for i in range(1, 51)], primary_key=False)
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    assert harness.sync("orders", "mass").success

    later = BASE_TIME + timedelta(hours=3)
    versions = [
        order_row(10, updated_at=later + timedelta(seconds=1), version=1),
        order_row(10, updated_at=later + timedelta(seconds=3), version=3),  # newest
        order_row(10, updated_at=later + timedelta(seconds=2), version=2),
        order_row(60, updated_at=later, version=1),
        order_row(60, updated_at=later + timedelta(seconds=9), version=2),  # newest, a new key
    ]
    engine_rows = versions  # appended as-is: no key constraint in this source
    import sqlalchemy as sa

    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(table.insert(), engine_rows)
    engine.dispose()

    result = harness.sync("orders", "daily")
    assert result.success
    cache = {row[0]: row for row in read_rows(cache_url, "orders")}
    assert cache[10][2].endswith(" v3") and cache[10][-1] == later + timedelta(seconds=3)
    assert cache[60][2].endswith(" v2") and cache[60][-1] == later + timedelta(seconds=9)
    meta = materialization(result)
    assert meta["sync_assets/rows_inserted"] == 1
    assert meta["dagster/row_count"] == 51


def test_first_incremental_runs_as_mass(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(
        source_url, [order_row(i, updated_at=BASE_TIME - timedelta(days=400)) for i in range(1, 301)]
    )
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])

    result = harness.sync("orders", "hourly")
    assert result.success
    meta = materialization(result)
    assert meta["sync_assets/mode"] == "full"
    assert meta["dagster/row_count"] == 300, "rows far older than any lookback are loaded too"
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    (log,) = sync_log_rows(cache_url, "orders")
    assert (log["update_type"], log["mode"], log["status"]) == ("hourly", "full", "succeeded")


def test_mass_only_table_has_no_partitions_and_reloads_in_full(tmp_path, monkeypatch, make_database):
    """Without `updated_at` a table's asset is unpartitioned: every sync of it is a full reload
    (test_definitions covers a daily run that selects it); the runner refuses an incremental."""
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    source = create_source(source_url, [order_row(i) for i in range(1, 21)])
    mass_only = {"name": "orders", "source_table": "orders", "primary_key": ["id"]}
    harness = make_harness(
        tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[mass_only]
    )
    defs = harness.defs
    assert defs.resolve_asset_graph().get(dg.AssetKey(["src", "orders"])).partitions_def is None
    assert harness.sync("orders", "mass").success
    upsert_source(source_url, source, [order_row(5, version=1)])

    assert harness.sync("orders", "mass").success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    log = sync_log_rows(cache_url)
    assert [(r["update_type"], r["mode"], r["status"]) for r in log] == [("mass", "full", "succeeded")] * 2

    catalog = load_catalog(harness.path)
    resources = resources_for(catalog)
    before = read_rows(cache_url, "orders")
    with pytest.raises(UpdateTypeNotAllowed, match="'daily' was asked for and nothing was changed"):
        run_sync(
            catalog,
            catalog.table("orders"),
            UpdateType.DAILY,
            source_db=resources["src"],
            cache_db=resources["cache"],
            run_id="direct",
            log=print,
        )
    assert read_rows(cache_url, "orders") == before
    assert sync_log_rows(cache_url) == log


@pytest.mark.parametrize("source_kind", ["sqlite", "postgresql"])
def test_query_source_with_renames(tmp_path, monkeypatch, make_database, source_kind):
    source_url, cache_url = make_database(source_kind), make_database("postgresql")
    table = create_source(source_url, [order_row(i) for i in range(1, 101)])
    spec = {
        "name": "active_orders",
        "query": "SELECT id, code, qty, updated_at FROM orders WHERE id % 2 = 1",
        "primary_key": ["order_id"],
        "updated_at": "changed_at",
        "columns": {"id": "order_id", "updated_at": "changed_at"},
    }
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    assert harness.sync("active_orders", "mass").success
    expected = [(r[0], r[1], r[6]) for r in read_rows(source_url, "orders") if r[0] % 2 == 1]
    assert [(r[0], r[1], r[2]) for r in read_rows(cache_url, "active_orders", key="order_id")] == expected

    upsert_source(source_url, table, [order_row(7, updated_at=BASE_TIME + timedelta(days=1), version=900)])
    assert harness.sync("active_orders", "daily").success
    cached = {r[0]: r for r in read_rows(cache_url, "active_orders", key="order_id")}
    assert cached[7][2] == order_row(7, version=900)["qty"]


def test_incremental_of_an_empty_source_reads_nothing_and_keeps_the_watermark(
    tmp_path, monkeypatch, make_database
):
    source_url, cache_url = make_database("sqlite"), make_database("postgresql")
    table = create_source(source_url, [order_row(i) for i in range(1, 11)])
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    assert harness.sync("orders", "mass").success
    import sqlalchemy as sa

    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
    engine.dispose()
    result = harness.sync("orders", "hourly")
    assert result.success
    assert materialization(result)["sync_assets/rows_read"] == 0
    assert materialization(result)["dagster/row_count"] == 10, "incrementals never delete"
    first, second = sync_log_rows(cache_url, "orders")
    assert second["watermark_to"] == first["watermark_to"]


def test_an_incremental_of_a_query_that_returns_nothing_keeps_the_cached_table(
    tmp_path, monkeypatch, make_database
):
    """A query's column types come with its first row; with no row to read, the cached table's
    stay (this failed with "the query returned no rows" before)."""
    import sqlalchemy as sa

    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    table = create_source(source_url, [order_row(i) for i in range(1, 11)])
    spec = {
        **ORDERS,
        "name": "q_orders",
        "target_table": "orders",
        "query": "SELECT id, code, qty, updated_at FROM orders",
    }
    spec.pop("source_table")
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    assert harness.sync("q_orders", "mass").success
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
    engine.dispose()
    result = harness.sync("q_orders", "daily")
    assert result.success
    assert materialization(result)["sync_assets/rows_read"] == 0
    assert len(read_rows(cache_url, "orders")) == 10
