"""`change_detection: hash`: incrementals for tables whose timestamp is missing or not trusted.

The source hashes each row; the cache keeps that hash; an incremental compares sums of them per
key range, narrows to the ranges that differ and fetches only the rows whose hash changed
(sync_assets issue 11, §5). Every pair of the engines that run here.
"""

from __future__ import annotations

import random
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_assets.catalog.changes import HASH_COLUMN
from sync_assets_tests.helpers import (
    ENGINE_PAIR_IDS,
    ENGINE_PAIRS,
    ENGINES,
    create_source,
    failure_message,
    make_harness,
    materialization,
    order_row,
    read_rows,
    sync_log_rows,
)

KINDS, PAIRS, PAIR_IDS = ENGINES, ENGINE_PAIRS, ENGINE_PAIR_IDS
ROWS = 10_000
# No `updated_at`: the source's timestamps are not trusted (jobs that change rows do not stamp them).
ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "change_detection": "hash"}


def without_hashes(url: sa.URL) -> list[tuple[Any, ...]]:
    """The cache's rows as the source holds them: the hash column left out."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        position = [c["name"] for c in sa.inspect(conn).get_columns("orders")].index(HASH_COLUMN)
    engine.dispose()
    return [row[:position] + row[position + 1 :] for row in read_rows(url, "orders")]


def change_source(url: sa.URL, table: sa.Table, ids: list[int], **values: Any) -> None:
    """Change rows without touching `updated_at`, as the jobs that make a timestamp untrustworthy do."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id.in_(ids)).values(**values))
    engine.dispose()


@pytest.mark.parametrize(("source_kind", "cache_kind"), PAIRS, ids=PAIR_IDS)
def test_only_rows_whose_hash_changed_are_fetched(
    tmp_path, monkeypatch, make_database, source_kind, cache_kind
):
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    table = create_source(source_url, [order_row(i) for i in range(1, ROWS + 1)])
    spec = {**ORDERS, "deletes": {"mode": "hard"}}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    result = harness.sync("orders", "mass")
    assert result.success, failure_message(result)
    assert without_hashes(cache_url) == read_rows(source_url, "orders")

    # Nothing changed: every digest matches, nothing is fetched or listed.
    result = harness.sync("orders", "daily")
    assert result.success, failure_message(result)
    meta = materialization(result)
    assert (meta["sync_assets/rows_read"], meta["sync_assets/hashes_compared"]) == (0, 0)

    # 0.1% of the rows changed at random positions (values only, one to NULL), one deleted, one new.
    pick = random.Random(5)
    changed = pick.sample(range(2, ROWS + 1), ROWS // 1000)
    change_source(source_url, table, changed[:-1], name="changed without a timestamp")
    change_source(source_url, table, changed[-1:], amount=None)
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id == 1))
        conn.execute(table.insert(), [order_row(ROWS + 1)])
    engine.dispose()
    result = harness.sync("orders", "daily")
    assert result.success, failure_message(result)
    meta = materialization(result)
    assert meta["sync_assets/mode"] == "incremental"
    # rows_read counts full rows fetched: exactly the changed and the new ones.
    assert meta["sync_assets/rows_read"] == len(changed) + 1
    assert (meta["sync_assets/rows_inserted"], meta["sync_assets/rows_updated"]) == (1, len(changed))
    assert meta["sync_assets/rows_deleted"] == 1
    # The hashes listed stay under 5% of the table on each side: ranges narrowed to a few dozen rows.
    assert 0 < meta["sync_assets/hashes_compared"] / 2 < ROWS * 0.05
    logged = sync_log_rows(cache_url, "orders")[-1]
    assert (logged["rows_read"], logged["rows_deleted"]) == (len(changed) + 1, 1)
    assert without_hashes(cache_url) == read_rows(source_url, "orders")

    # And the next sync finds nothing left to do.
    result = harness.sync("orders", "daily")
    assert result.success
    assert materialization(result)["sync_assets/rows_read"] == 0


@pytest.mark.parametrize(("source_kind", "cache_kind"), [("sqlite", "duckdb"), ("duckdb", "postgresql")])
def test_a_cache_table_from_before_hashes_gets_them(
    tmp_path, monkeypatch, make_database, source_kind, cache_kind
):
    """A table synced by timestamp, switched to `change_detection: hash`: the hash column is added,
    the first incremental loads in full, and the next compares."""
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    table = create_source(source_url, [order_row(i) for i in range(1, 301)])
    by_time = {**ORDERS, "change_detection": "timestamp", "updated_at": "updated_at"}
    harness = make_harness(
        tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[by_time]
    )
    assert harness.sync("orders", "mass").success
    by_hash = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**ORDERS, "updated_at": "updated_at"}],
    )
    result = by_hash.sync("orders", "daily")
    assert result.success, failure_message(result)
    assert materialization(result)["sync_assets/mode"] == "full"
    change_source(source_url, table, [42], qty=-1)
    result = by_hash.sync("orders", "daily")
    assert result.success, failure_message(result)
    meta = materialization(result)
    assert (meta["sync_assets/mode"], meta["sync_assets/rows_read"]) == ("incremental", 1)
    assert without_hashes(cache_url) == read_rows(source_url, "orders")


def test_a_table_without_timestamp_gets_daily_and_hourly(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 11)])
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    partitions = harness.defs.resolve_asset_graph().get(dg.AssetKey(["src", "orders"])).partitions_def
    assert partitions is not None and set(partitions.get_partition_keys()) == {"mass", "daily", "hourly"}
    assert harness.sync("orders", "hourly").success  # never synced: a full load
    assert harness.sync("orders", "hourly").success


def test_hash_needs_a_sql_source(tmp_path):
    from sync_assets.catalog.loader import CatalogError, load_catalog

    path = tmp_path / "catalog.yaml"
    path.write_text(
        "connections:\n"
        "  drops: {type: files, path: /tmp}\n"
        "  cache: {url: 'sqlite:///cache.db'}\n"
        "cache: cache\n"
        "tables:\n"
        "  - {name: orders, source: drops, files: 'o_*.csv', change_detection: hash}\n"
    )
    with pytest.raises(CatalogError, match="`change_detection: hash` applies to SQL source tables"):
        load_catalog(path)


@pytest.mark.parametrize("kind", KINDS)
def test_direct_copies_carry_the_hashes(tmp_path, monkeypatch, make_database, kind):
    """Same engine on both ends, plain columns: the databases copy the rows (and compute the
    hashes) themselves, for the mass and for the fetched keys of an incremental."""
    source_url, cache_url = make_database(kind), make_database(kind)
    engine = sa.create_engine(source_url)
    plain = sa.Table(
        "items",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(40)),
        sa.Column("qty", sa.Integer),
    )
    plain.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(plain.insert(), [{"id": i, "name": f"item {i}", "qty": i} for i in range(1, 3001)])
    spec = {"name": "items", "source_table": "items", "primary_key": ["id"], "change_detection": "hash"}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    result = harness.sync("items", "mass")
    assert result.success, failure_message(result)
    if kind == "sqlite":
        logged = [e.user_message for e in harness.instance.all_logs(result.run_id)]
        assert any("rows copied inside SQLite" in m for m in logged)
    with engine.begin() as conn:
        conn.execute(plain.update().where(plain.c.id.in_([17, 2999])).values(qty=-1))
    engine.dispose()
    result = harness.sync("items", "daily")
    assert result.success, failure_message(result)
    assert materialization(result)["sync_assets/rows_read"] == 2
    cache = sa.create_engine(cache_url)
    with cache.connect() as conn:
        cached = dict(conn.execute(sa.text("SELECT id, qty FROM items WHERE id IN (17, 2999, 18)")).all())
    cache.dispose()
    assert {int(k): int(v) for k, v in cached.items()} == {17: -1, 2999: -1, 18: 18}


def test_an_empty_cache_table_loads_in_full(tmp_path, monkeypatch, make_database):
    """Compared with an empty cache, every source key would be listed: a full load instead."""
    source_url, cache_url = make_database("sqlite"), make_database("duckdb")
    table = create_source(source_url, [order_row(1)])
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
    spec = {**ORDERS, "deletes": {"mode": "hard"}}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    result = harness.sync("orders", "mass")
    assert result.success, failure_message(result)
    with engine.begin() as conn:
        conn.execute(table.insert(), [order_row(i) for i in range(1, 51)])
    engine.dispose()
    result = harness.sync("orders", "daily")
    assert result.success, failure_message(result)
    meta = materialization(result)
    assert (meta["sync_assets/mode"], meta["sync_assets/rows_read"], meta["sync_assets/hashes_compared"]) == (
        "full",
        50,
        0,
    )
    logged = [e.user_message for e in harness.instance.all_logs(result.run_id)]
    assert any("the cache table is empty, so this sync loads in full" in m for m in logged)
