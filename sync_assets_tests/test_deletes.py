"""Rows deleted at the source leave the cache at the next incremental (`deletes:`), found by
comparing key ranges on both sides rather than transferring every key, and never more than
`max_delete_ratio` of the table or from a source that returned nothing (sync_assets issue 11, §4).

Every pair of the engines that run here (SQLite, DuckDB, PostgreSQL as source and as cache).
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from sync_assets_tests.helpers import (
    BASE_TIME,
    ENGINE_PAIR_IDS,
    ENGINE_PAIRS,
    ENGINES,
    create_source,
    failure_message,
    make_harness,
    materialization,
    order_row,
    read_rows,
    staging_tables,
    sync_log_rows,
    upsert_source,
)

KINDS, PAIRS, PAIR_IDS = ENGINES, ENGINE_PAIRS, ENGINE_PAIR_IDS
ROWS = 2000
ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}


def delete_source_rows(url: sa.URL, table: sa.Table, ids: list[int]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id.in_(ids)))
    engine.dispose()


def cached_ids(url: sa.URL, where: str = "") -> set[int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ids = {int(i) for (i,) in conn.exec_driver_sql(f"SELECT id FROM orders {where}")}
    engine.dispose()
    return ids


def check_results(result: Any) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.mark.parametrize(("source_kind", "cache_kind"), PAIRS, ids=PAIR_IDS)
def test_deletions_are_found_by_key_range_and_guarded(
    tmp_path, monkeypatch, make_database, source_kind, cache_kind
):
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    table = create_source(source_url, [order_row(i) for i in range(1, ROWS + 1)])
    spec = {**ORDERS, "deletes": {"mode": "hard"}}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    assert harness.sync("orders", "mass").success
    pick = random.Random(11)

    # 0.1% deleted at random positions, with an update and an insert in the same sync.
    gone = pick.sample(range(1, ROWS + 1), ROWS // 1000)
    delete_source_rows(source_url, table, gone)
    later = order_row(ROWS)["updated_at"] + timedelta(minutes=1)
    kept = next(i for i in range(1, ROWS + 1) if i not in gone)
    upsert_source(
        source_url,
        table,
        [order_row(kept, updated_at=later, version=1), order_row(ROWS + 1, updated_at=later)],
    )
    result = harness.sync("orders", "daily")
    assert result.success, failure_message(result)
    meta = materialization(result)
    assert meta["sync_assets/rows_deleted"] == len(gone)
    assert (meta["sync_assets/rows_inserted"], meta["sync_assets/rows_updated"]) == (1, 1)
    # Not a key transfer: the keys listed (both sides together) are a few ranges' worth.
    assert 0 < meta["sync_assets/hashes_compared"] < ROWS * 0.1
    assert sync_log_rows(cache_url, "orders")[-1]["rows_deleted"] == len(gone)
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    assert check_results(result)["reconciliation"] is True

    # Nothing gone since: nothing deleted, and the comparison stops at the first digests.
    result = harness.sync("orders", "daily")
    assert result.success
    assert materialization(result)["sync_assets/rows_deleted"] == 0
    assert materialization(result)["sync_assets/hashes_compared"] == 0

    # 50% under the default ratio: refused, and the update read in the same sync is not applied.
    before = read_rows(cache_url, "orders")
    remaining = sorted(cached_ids(cache_url))
    half = pick.sample(remaining, len(remaining) // 2)
    delete_source_rows(source_url, table, half)
    survivor = next(i for i in remaining if i not in half)
    upsert_source(
        source_url, table, [order_row(survivor, updated_at=later + timedelta(minutes=1), version=2)]
    )
    result = harness.sync("orders", "daily")
    assert not result.success
    message = failure_message(result)
    assert f"{len(half):,} of the {len(remaining):,} cached rows (50.0%) are gone" in message
    assert "more than deletes.max_delete_ratio (10%) allows; nothing was changed, upserts included" in message
    assert read_rows(cache_url, "orders") == before
    assert sync_log_rows(cache_url, "orders")[-1]["status"] == "failed"
    assert staging_tables(cache_url) == []

    # The same deletions once the table allows half of it to go: applied.
    raised = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**spec, "deletes": {"mode": "hard", "max_delete_ratio": 0.5}}],
    )
    raised.instance = harness.instance
    result = raised.sync("orders", "daily")
    assert result.success, failure_message(result)
    assert materialization(result)["sync_assets/rows_deleted"] == len(half)
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")


@pytest.mark.parametrize(("source_kind", "cache_kind"), PAIRS, ids=PAIR_IDS)
def test_thirty_percent_deleted_under_a_raised_ratio(
    tmp_path, monkeypatch, make_database, source_kind, cache_kind
):
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    table = create_source(source_url, [order_row(i) for i in range(1, ROWS + 1)])
    spec = {**ORDERS, "deletes": {"mode": "hard", "max_delete_ratio": 0.3}}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    assert harness.sync("orders", "mass").success
    gone = random.Random(30).sample(range(1, ROWS + 1), ROWS * 3 // 10)
    delete_source_rows(source_url, table, gone)
    result = harness.sync("orders", "daily")
    assert result.success, failure_message(result)
    assert materialization(result)["sync_assets/rows_deleted"] == len(gone)
    assert cached_ids(cache_url) == set(range(1, ROWS + 1)) - set(gone)
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")


@pytest.mark.parametrize("cache_kind", KINDS)
def test_a_source_that_returns_no_rows_deletes_nothing(tmp_path, monkeypatch, make_database, cache_kind):
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    table = create_source(source_url, [order_row(i) for i in range(1, 101)])
    spec = {**ORDERS, "deletes": {"mode": "hard", "max_delete_ratio": 1}}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    delete_source_rows(source_url, table, list(range(1, 101)))
    result = harness.sync("orders", "daily")
    assert not result.success
    message = failure_message(result)
    assert "the source returned no rows at all, so none of the 100 cached rows were deleted" in message
    assert read_rows(cache_url, "orders") == before


@pytest.mark.parametrize(("source_kind", "cache_kind"), [("sqlite", "postgresql"), ("postgresql", "duckdb")])
def test_soft_deletes_stamp_the_row_once(tmp_path, monkeypatch, make_database, source_kind, cache_kind):
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    # An hour apart: all but the newest rows are older than the lookback, so reconciliation
    # counts them (and must leave the stamped ones out of the cache's count).
    table = create_source(
        source_url, [order_row(i, updated_at=BASE_TIME + timedelta(hours=i)) for i in range(1, 501)]
    )
    spec = {**ORDERS, "deletes": {"mode": "soft", "column": "deleted_at"}}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    assert harness.sync("orders", "mass").success
    assert cached_ids(cache_url, "WHERE deleted_at IS NOT NULL") == set()
    delete_source_rows(source_url, table, [3, 250, 500])
    result = harness.sync("orders", "daily")
    assert result.success, failure_message(result)
    assert materialization(result)["sync_assets/rows_deleted"] == 3
    assert cached_ids(cache_url, "WHERE deleted_at IS NOT NULL") == {3, 250, 500}
    assert len(cached_ids(cache_url)) == 500  # still there, stamped
    (reconciliation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "reconciliation"]
    assert reconciliation.passed, reconciliation.description
    assert reconciliation.metadata["cache_rows"].value > 400
    engine = sa.create_engine(cache_url)
    with engine.connect() as conn:
        (stamp,) = conn.exec_driver_sql("SELECT DISTINCT deleted_at FROM orders WHERE id = 250").one()
    engine.dispose()

    # The next sync neither stamps them again nor counts them.
    result = harness.sync("orders", "daily")
    assert result.success
    assert materialization(result)["sync_assets/rows_deleted"] == 0
    engine = sa.create_engine(cache_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT deleted_at FROM orders WHERE id = 250").scalar_one() == stamp
    engine.dispose()

    # A row that comes back (with a new timestamp) is live again.
    back = order_row(250, updated_at=BASE_TIME + timedelta(hours=501))
    upsert_source(source_url, table, [back])
    result = harness.sync("orders", "daily")
    assert result.success
    assert cached_ids(cache_url, "WHERE deleted_at IS NOT NULL") == {3, 500}


@pytest.mark.parametrize(("source_kind", "cache_kind"), [("sqlite", "postgresql"), ("postgresql", "sqlite")])
def test_a_composite_text_key(tmp_path, monkeypatch, make_database, source_kind, cache_kind):
    """Ranges of a two-column key, compared column by column on both engines."""
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    engine = sa.create_engine(source_url)
    lines = sa.Table(
        "lines",
        sa.MetaData(),
        sa.Column("doc", sa.String(12), primary_key=True),
        sa.Column("line", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("qty", sa.Integer),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    lines.metadata.create_all(engine)
    stamp = order_row(1)["updated_at"]
    rows = [
        {"doc": f"D{d:04d}", "line": n, "qty": d * n, "updated_at": stamp}
        for d in range(300)
        for n in range(5)
    ]
    with engine.begin() as conn:
        conn.execute(lines.insert(), rows)
    spec = {
        "name": "lines",
        "source_table": "lines",
        "primary_key": ["doc", "line"],
        "updated_at": "updated_at",
        "deletes": {"mode": "hard"},
    }
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    assert harness.sync("lines", "mass").success
    gone = [("D0007", 0), ("D0150", 4), ("D0299", 2)]
    with engine.begin() as conn:
        for doc, line in gone:
            conn.execute(sa.delete(lines).where(lines.c.doc == doc, lines.c.line == line))
    engine.dispose()
    result = harness.sync("lines", "daily")
    assert result.success, failure_message(result)
    assert materialization(result)["sync_assets/rows_deleted"] == 3
    cache = sa.create_engine(cache_url)
    with cache.connect() as conn:
        keys = {(d, int(n)) for d, n in conn.exec_driver_sql("SELECT doc, line FROM lines")}
    cache.dispose()
    assert keys == {(r["doc"], r["line"]) for r in rows} - set(gone)


def test_deletes_need_a_sql_source(tmp_path):
    from sync_assets.catalog.loader import CatalogError, load_catalog

    path = tmp_path / "catalog.yaml"
    path.write_text(
        "connections:\n"
        "  api: {type: rest, base_url: 'http://127.0.0.1:1'}\n"
        "  cache: {url: 'sqlite:///cache.db'}\n"
        "cache: cache\n"
        "tables:\n"
        "  - {name: products, source: api, endpoint: /p, primary_key: [id], deletes: {mode: hard}}\n"
    )
    with pytest.raises(CatalogError, match="`deletes` applies to SQL source tables"):
        load_catalog(path)
    path.write_text(
        "connections:\n"
        "  src: {url: 'sqlite:///src.db'}\n"
        "  cache: {url: 'sqlite:///cache.db'}\n"
        "cache: cache\n"
        "tables:\n"
        "  - {name: t, source: src, source_table: t, primary_key: [id], deletes: {mode: soft}}\n"
    )
    with pytest.raises(CatalogError, match="soft deletes need `column`"):
        load_catalog(path)


def test_deletes_need_keys_the_source_holds_as_cached(tmp_path):
    """A JDE key read through a Julian-date or implied-decimal conversion has other values in the
    source than in the cache: its ranges could not be compared, so the loader refuses it."""
    from sync_assets.catalog.loader import CatalogError, load_catalog

    path = tmp_path / "catalog.yaml"
    path.write_text(
        "connections:\n"
        "  jde: {url: 'sqlite:///src.db'}\n"
        "  cache: {url: 'sqlite:///cache.db'}\n"
        "cache: cache\n"
        "tables:\n"
        "  - name: lines\n"
        "    source: jde\n"
        "    source_table: F4211\n"
        "    primary_key: [doc, line]\n"
        "    columns: {SDDOCO: doc, SDLNID: line}\n"
        "    jde: {implied_decimals: {SDLNID: 3}, trim: true}\n"
        "    deletes: {mode: hard}\n"
    )
    with pytest.raises(
        CatalogError, match="`primary_key` column 'line' is converted by `jde` \\(from 'SDLNID'\\)"
    ):
        load_catalog(path)
    path.write_text(path.read_text().replace("implied_decimals: {SDLNID: 3}, ", ""))
    load_catalog(path)  # trimmed text keys compare fine (and a candidate is looked up once more)
