"""Full loads through a loader with a connection of its own (SQL Server's TDS bulk copy commits on
a connection it opens itself): the batches fill a committed fresh table before the commit, the
commit swaps it in, and a failure or a crash leaves the target as it was. An incremental of
several batches fills a committed heap the same way, which the commit merges from.

The shared code runs here against real SQLite files, with a cache dialect whose separate loader
is a second sqlite3 connection (the same SQLite library, so no lock is lost; see
dialects/sqlite.py), and on DuckDB, whose full loads take this path for real (each batch
committed on its own, so a reload's rows are not all held in memory until one commit). SQL
Server's own statements are compiled in dialects/test_mssql_bulk.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta

import polars as pl
import pytest
import sqlalchemy as sa

from sync_assets.dialects import base
from sync_assets.dialects import duckdb as duckdb_dialect
from sync_assets.dialects.sqlite import SQLiteDialect, to_sqlite_values
from sync_assets_tests.helpers import (
    BASE_TIME,
    create_source,
    failure_message,
    make_harness,
    order_row,
    orders_table,
    read_rows,
    staging_tables,
    sync_log_rows,
)

# The fault injected into a commit: its last write, sync_log's `succeeded`, refused.
REFUSE_SUCCESS = (
    "CREATE TRIGGER refuse_success BEFORE UPDATE OF status ON sync_log WHEN NEW.status = 'succeeded' "
    "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
)
ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}


class SeparatelyLoadingSQLite(SQLiteDialect):
    """SQLite whose full loads take the fresh-table path, counting the batches its loader wrote."""

    def __init__(self) -> None:
        self.loaded_batches = 0

    def fresh_table(self, conn: sa.Connection, target: sa.Table, *, several_batches: bool) -> sa.Table | None:
        return self.create_committed(conn, self.fresh_copy(target))

    def separate_staging(
        self, conn: sa.Connection, target: sa.Table, *, several_batches: bool
    ) -> sa.Table | None:
        # As SQL Server on mssql-python: only an incremental of several batches takes the heap.
        if not several_batches:
            return None
        return self.create_committed(conn, self.fresh_copy(target, keyed=False))

    def load_separately(self, conn: sa.Connection, dest: sa.Table, frames: Iterator[pl.DataFrame]) -> None:
        writer = sqlite3.connect(conn.engine.url.database, isolation_level=None)
        statement = str(sa.insert(dest).compile(dialect=conn.dialect))
        try:
            writer.execute("BEGIN")
            for frame in frames:
                writer.executemany(statement, to_sqlite_values(frame).iter_rows())
                self.loaded_batches += 1
            writer.execute("COMMIT")
        finally:
            writer.close()


@pytest.fixture
def separate(monkeypatch: pytest.MonkeyPatch) -> SeparatelyLoadingSQLite:
    dialect = SeparatelyLoadingSQLite()
    monkeypatch.setitem(base._LOADED, "sqlite", dialect)
    return dialect


def _execute(url: sa.URL, statement: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def _insert(url: sa.URL, rows: list[dict]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(orders_table(sa.MetaData(), "orders", primary_key=False).insert(), rows)
    engine.dispose()


def _tables(url: sa.URL) -> set[str]:
    engine = sa.create_engine(url)
    names = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    return names


def _harness(
    tmp_path,
    monkeypatch,
    make_database,
    rows: int,
    *,
    primary_key: bool = True,
    cache: str = "sqlite",
    batch_size: int = 500,
):
    source_url, cache_url = make_database("sqlite"), make_database(cache)
    create_source(source_url, [order_row(i) for i in range(1, rows + 1)], primary_key=primary_key)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**ORDERS, "direct_copy": False}],
        defaults={"batch_size": batch_size},
    )
    return harness, source_url, cache_url


def test_a_full_load_fills_a_fresh_table_then_swaps_it_in(tmp_path, monkeypatch, make_database, separate):
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 2_000)
    assert harness.sync("orders", "mass").success
    assert separate.loaded_batches == 4, "2,000 rows in batches of 500, all through the separate loader"
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    # The key and the watermark index are the target's, built on the swapped-in table.
    engine = sa.create_engine(cache_url)
    inspector = sa.inspect(engine)
    assert inspector.get_pk_constraint("orders")["constrained_columns"] == ["id"]
    assert [i["column_names"] for i in inspector.get_indexes("orders")] == [["updated_at"]]
    engine.dispose()

    _execute(source_url, "DELETE FROM orders WHERE id > 1000")  # half the rows are gone
    assert harness.sync("orders", "mass").success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    assert [r["status"] for r in sync_log_rows(cache_url, "orders")] == ["succeeded", "succeeded"]
    assert not staging_tables(cache_url)


def test_duplicate_keys_fail_the_load_and_leave_nothing(tmp_path, monkeypatch, make_database, separate):
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 1_000, primary_key=False)
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    _insert(source_url, [order_row(700)])  # a second row with key 700

    result = harness.sync("orders", "mass")
    assert not result.success
    assert "table 'orders': the source holds duplicate (or NULL) primary key values (id)" in failure_message(
        result
    )
    assert read_rows(cache_url, "orders") == before
    log = sync_log_rows(cache_url, "orders")
    assert log[-1]["status"] == "failed" and log[-1]["error"].startswith("load phase: table 'orders'")
    assert not staging_tables(cache_url), "the half-filled fresh table is dropped"


def test_a_fresh_table_left_by_a_crash_is_replaced(tmp_path, monkeypatch, make_database, separate):
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 600)
    engine = sa.create_engine(cache_url)
    with engine.begin() as conn:  # what a killed load leaves: a committed, half-filled fresh table
        conn.execute(sa.text("CREATE TABLE orders__sync_new (id INTEGER PRIMARY KEY, junk TEXT)"))
        conn.execute(sa.text("INSERT INTO orders__sync_new VALUES (1, 'half a load')"))
    engine.dispose()

    assert harness.sync("orders", "mass").success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    assert "orders__sync_new" not in _tables(cache_url)


def test_a_target_a_view_refers_to_keeps_its_identity(tmp_path, monkeypatch, make_database, separate):
    """No rename swap under a view: the target's rows are replaced from the fresh table instead."""
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 800)
    assert harness.sync("orders", "mass").success
    engine = sa.create_engine(cache_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE VIEW big_orders AS SELECT id FROM orders WHERE id > 400"))
    _insert(source_url, [order_row(i) for i in range(801, 1_201)])

    assert harness.sync("orders", "mass").success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM big_orders")).scalar_one() == 800
    engine.dispose()
    assert not staging_tables(cache_url)


def test_a_commit_that_fails_after_the_swap_leaves_the_target_and_no_fresh_table(
    tmp_path, monkeypatch, make_database, separate
):
    """The swap is undone with the commit's transaction; the fresh table it had renamed is back,
    and is dropped. The fault: a trigger refusing sync_log's `succeeded`, the commit's last write."""
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 900)
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    _insert(source_url, [order_row(i) for i in range(901, 1_001)])
    _execute(cache_url, REFUSE_SUCCESS)

    result = harness.sync("orders", "mass")
    assert not result.success
    assert "injected fault" in failure_message(result)
    assert read_rows(cache_url, "orders") == before
    assert not staging_tables(cache_url)
    assert [r["status"] for r in sync_log_rows(cache_url, "orders")] == ["succeeded", "failed"]


def _changed(url: sa.URL, updated: range, inserted: range) -> None:
    """Rows `updated` in place and rows `inserted`, all stamped after everything synced so far."""
    later = BASE_TIME + timedelta(days=30)
    engine = sa.create_engine(url)
    table = orders_table(sa.MetaData(), "orders", primary_key=False)
    with engine.begin() as conn:
        for i in updated:
            row = order_row(i, updated_at=later + timedelta(seconds=i), version=1)
            conn.execute(table.update().where(table.c.id == i).values(row))
        conn.execute(
            table.insert(), [order_row(i, updated_at=later + timedelta(seconds=i)) for i in inserted]
        )
    engine.dispose()


def test_an_incremental_of_several_batches_merges_from_a_heap_the_loader_filled(
    tmp_path, monkeypatch, make_database, separate
):
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 1_000)
    assert harness.sync("orders", "mass").success
    full_load_batches = separate.loaded_batches
    _changed(source_url, updated=range(1, 301), inserted=range(1_001, 1_701))

    assert harness.sync("orders", "daily").success
    last = sync_log_rows(cache_url, "orders")[-1]
    # The daily re-reads its lookback window too: 1,700 rows, 300 of them changed, 700 new.
    assert (last["status"], last["rows_read"], last["rows_inserted"], last["rows_updated"]) == (
        "succeeded",
        1_700,
        700,
        300,
    )
    assert separate.loaded_batches - full_load_batches == 4, "1,700 rows in batches of 500"
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    assert not staging_tables(cache_url), "the heap is dropped after the merge"


def test_an_incremental_of_one_batch_stages_in_the_session(tmp_path, monkeypatch, make_database, separate):
    """One batch is not worth the separate loader's start (on SQL Server, a second login)."""
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 400, batch_size=5_000)
    assert harness.sync("orders", "mass").success
    full_load_batches = separate.loaded_batches
    _changed(source_url, updated=range(1, 11), inserted=range(401, 411))

    assert harness.sync("orders", "daily").success
    assert separate.loaded_batches == full_load_batches
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    last = sync_log_rows(cache_url, "orders")[-1]
    assert (last["rows_inserted"], last["rows_updated"]) == (10, 10)
    assert not staging_tables(cache_url)


def test_an_incremental_whose_commit_fails_leaves_the_target_and_no_heap(
    tmp_path, monkeypatch, make_database, separate
):
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 1_000)
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    _changed(source_url, updated=range(1, 401), inserted=range(1_001, 1_801))
    _execute(cache_url, REFUSE_SUCCESS)

    result = harness.sync("orders", "daily")
    assert not result.success
    assert "injected fault" in failure_message(result)
    assert read_rows(cache_url, "orders") == before
    assert not staging_tables(cache_url), "the filled heap is dropped with the failed commit"
    assert [r["status"] for r in sync_log_rows(cache_url, "orders")] == ["succeeded", "failed"]

    _execute(cache_url, "DROP TRIGGER refuse_success")
    assert harness.sync("orders", "daily").success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")


def test_an_incremental_replaces_a_heap_left_by_a_crash(tmp_path, monkeypatch, make_database, separate):
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 600)
    assert harness.sync("orders", "mass").success
    _execute(cache_url, "CREATE TABLE orders__sync_new (id INTEGER, junk TEXT)")  # a killed stage's heap
    _execute(cache_url, "INSERT INTO orders__sync_new VALUES (1, 'half a stage')")
    _changed(source_url, updated=range(1, 201), inserted=range(601, 1_401))

    assert harness.sync("orders", "daily").success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    assert not staging_tables(cache_url)


def _duckdb_indexes(url: sa.URL) -> set[str]:
    """The indexes on the cache's orders table."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        names = set(
            conn.execute(
                sa.text("SELECT index_name FROM duckdb_indexes() WHERE table_name = 'orders'")
            ).scalars()
        )
    engine.dispose()
    return names


def test_a_duckdb_full_load_swaps_in_a_table_filled_batch_by_batch(tmp_path, monkeypatch, make_database):
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 2_000, cache="duckdb")
    assert harness.sync("orders", "mass").success
    assert _duckdb_indexes(cache_url) == set(), "no ART on the watermark: zonemaps serve its ranges"
    engine = sa.create_engine(cache_url)
    assert sa.inspect(engine).get_pk_constraint("orders")["constrained_columns"] == ["id"]
    with engine.begin() as conn:  # a fresh table a killed load left behind
        conn.execute(sa.text("CREATE TABLE orders__sync_new (id BIGINT PRIMARY KEY, junk VARCHAR)"))
    engine.dispose()
    _execute(source_url, "DELETE FROM orders WHERE id > 1500")

    assert harness.sync("orders", "mass").success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    assert _duckdb_indexes(cache_url) == set()
    assert not staging_tables(cache_url)
    assert [r["status"] for r in sync_log_rows(cache_url, "orders")] == ["succeeded", "succeeded"]


@pytest.fixture
def small_duckdb_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DuckDB full load committed every 300 rows (500-row batches cut at 300, 600, ...)."""
    monkeypatch.setattr(duckdb_dialect, "ROW_GROUP_ROWS", 300)


def test_a_duckdb_full_load_committed_in_stretches_holds_every_row(
    tmp_path, monkeypatch, make_database, small_duckdb_commits
):
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 2_150, cache="duckdb")
    assert harness.sync("orders", "mass").success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    assert not staging_tables(cache_url)


def test_a_duplicate_key_in_a_later_duckdb_commit_leaves_the_target(
    tmp_path, monkeypatch, make_database, small_duckdb_commits
):
    harness, source_url, cache_url = _harness(
        tmp_path, monkeypatch, make_database, 1_000, primary_key=False, cache="duckdb"
    )
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    _insert(source_url, [order_row(1_001 + i) for i in range(500)] + [order_row(300)])  # 300 again, row 1,501

    result = harness.sync("orders", "mass")
    assert not result.success
    assert "table 'orders': the source holds duplicate (or NULL) primary key values (id)" in failure_message(
        result
    )
    assert read_rows(cache_url, "orders") == before
    assert not staging_tables(cache_url), "the fresh table, five commits filled, is dropped"


def _mark_duckdb_table(url: sa.URL, name: str) -> None:
    """A comment on the table: the same table keeps it, a table swapped in has none."""
    _execute(url, f"COMMENT ON TABLE {name} IS 'the table before the reload'")


def _duckdb_table_comment(url: sa.URL, name: str) -> str | None:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        comment = conn.execute(
            sa.text("SELECT comment FROM duckdb_tables() WHERE table_name = :name"), {"name": name}
        ).scalar_one()
    engine.dispose()
    return comment


def _reload_after(tmp_path, monkeypatch, make_database, create_index: str) -> sa.URL:
    """A DuckDB cache table given `create_index` and marked, then reloaded with 200 more rows."""
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, 700, cache="duckdb")
    assert harness.sync("orders", "mass").success
    _execute(cache_url, create_index)
    _mark_duckdb_table(cache_url, "orders")
    _insert(source_url, [order_row(i) for i in range(701, 901)])

    assert harness.sync("orders", "mass").success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    assert not staging_tables(cache_url)
    return cache_url


def test_a_duckdb_watermark_index_of_an_earlier_release_goes_with_the_swap(
    tmp_path, monkeypatch, make_database
):
    """Earlier releases built an ART on a DuckDB cache's watermark; the next reload still swaps a
    fresh table in (the old index is dropped with the old table) instead of reloading in place."""
    cache_url = _reload_after(
        tmp_path, monkeypatch, make_database, "CREATE INDEX ix_orders_updated_at ON orders (updated_at)"
    )
    assert _duckdb_table_comment(cache_url, "orders") is None, "a new table swapped in"
    assert _duckdb_indexes(cache_url) == set()


def test_a_duckdb_target_with_an_index_of_its_own_keeps_it(tmp_path, monkeypatch, make_database):
    """An index sync_assets did not make would be lost by dropping the table: the target's rows
    are replaced from the fresh table instead."""
    cache_url = _reload_after(
        tmp_path, monkeypatch, make_database, "CREATE INDEX apps_own_index ON orders (qty)"
    )
    assert "apps_own_index" in _duckdb_indexes(cache_url)
    assert _duckdb_table_comment(cache_url, "orders") is not None, "reloaded in place"
