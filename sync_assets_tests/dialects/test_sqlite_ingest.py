"""Full loads into a SQLite cache through ADBC's ingest in a process of its own (sqlite_ingest.py):
the values stored exactly as the in-process row path stores them, a refused key named, and a load
the sync abandons never committed. Real PostgreSQL sources, real SQLite caches, the real child."""

from __future__ import annotations

import sqlite3

import polars as pl
import pytest
import sqlalchemy as sa

from sync_assets.dialects import sqlite_ingest
from sync_assets_tests.helpers import (
    ORDERS,
    create_source,
    failure_message,
    make_harness,
    order_row,
    read_rows,
    staging_tables,
    synced,
)

pytest.importorskip("adbc_driver_sqlite", reason="adbc-driver-sqlite not installed")
ROWS = [order_row(i) for i in range(1, 251)]
# Read as rows, in batches of batch_size (ADBC's PostgreSQL reader sizes its batches by bytes).
TABLE = {**ORDERS, "arrow_read": False}


@pytest.fixture
def ingest_calls(monkeypatch):
    """The tables sqlite_ingest.copy loaded (the real function runs)."""
    calls: list[str] = []
    real = sqlite_ingest.copy

    def recorded(database, table, frames):
        calls.append(table)
        return real(database, table, frames)

    monkeypatch.setattr(sqlite_ingest, "copy", recorded)
    return calls


def _stored(url: sa.URL) -> list[tuple]:
    """Every value as SQLite stored it, with its storage class."""
    with sqlite3.connect(url.database) as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(orders)")]
        select = ", ".join(f'"{c}", typeof("{c}")' for c in columns)
        return db.execute(f"SELECT {select} FROM orders ORDER BY id").fetchall()


def _indexes(url: sa.URL) -> list[tuple]:
    with sqlite3.connect(url.database) as db:
        return db.execute(
            "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'orders' ORDER BY name"
        ).fetchall()


def test_several_batches_go_through_the_ingest_process_and_store_what_the_row_path_stores(
    tmp_path, monkeypatch, make_pg_database, make_sqlite_database, ingest_calls
):
    source = make_pg_database()
    create_source(source, ROWS)
    by_ingest, by_rows = make_sqlite_database(), make_sqlite_database()
    for cache, batch_size in ((by_ingest, 60), (by_rows, 1000)):
        harness = make_harness(
            tmp_path,
            monkeypatch,
            source_url=source,
            cache_url=cache,
            tables=[TABLE],
            defaults={"batch_size": batch_size},
        )
        assert harness.sync("orders", "mass").success
        assert harness.sync("orders", "mass").success, "a second reload swaps over the first"
    assert ingest_calls == ["orders__sync_new", "orders__sync_new"], "one batch stays in process"
    assert _stored(by_ingest) == _stored(by_rows)
    assert _indexes(by_ingest) == _indexes(by_rows)
    assert read_rows(by_ingest, "orders") == read_rows(source, "orders")
    assert staging_tables(by_ingest) == []


def test_a_duplicate_key_is_named_and_the_cache_stays_as_it_was(
    tmp_path, monkeypatch, make_pg_database, make_sqlite_database, ingest_calls
):
    source, cache = make_pg_database(), make_sqlite_database()
    table = create_source(source, ROWS, primary_key=False)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source,
        cache_url=cache,
        tables=[TABLE],
        defaults={"batch_size": 60},
    )
    assert harness.sync("orders", "mass").success
    before = _stored(cache)
    engine = sa.create_engine(source)
    with engine.begin() as conn:  # id 7 again, in the last batch
        conn.execute(table.insert(), [{**order_row(7), "id": 7, "code": "DUP"}])
    engine.dispose()
    result = harness.sync("orders", "mass")
    assert not result.success and not synced(result)
    message = failure_message(result)
    assert "duplicate (or NULL) primary key values (id)" in message
    assert "UNIQUE constraint failed: orders__sync_new.id" in message
    assert _stored(cache) == before
    assert staging_tables(cache) == []
    assert ingest_calls == ["orders__sync_new", "orders__sync_new"]


def test_a_load_the_sync_abandons_is_never_committed(
    tmp_path, monkeypatch, make_sqlite_database, ingest_calls
):
    """A value the sync refuses in the fourth batch, after three went to the child: the child is
    stopped before its commit, the cache keeps its rows and no fresh table is left."""
    source, cache = make_sqlite_database(), make_sqlite_database()
    create_source(source, ROWS)
    table = {**ORDERS, "direct_copy": False}  # SQLite to SQLite would copy inside SQLite
    harness = make_harness(
        tmp_path, monkeypatch, source_url=source, cache_url=cache, tables=[table], defaults={"batch_size": 60}
    )
    assert harness.sync("orders", "mass").success
    before = _stored(cache)
    with sqlite3.connect(source.database) as db:  # SQLite keeps text in an INTEGER column
        db.execute("UPDATE orders SET qty = 'many' WHERE id = 200")
    result = harness.sync("orders", "mass")
    assert not result.success
    assert "column 'qty'" in failure_message(result) and "'many'" in failure_message(result)
    assert _stored(cache) == before
    assert staging_tables(cache) == []
    assert len(ingest_calls) == 2


def test_a_cache_locked_past_the_busy_timeout_is_a_transient_error(tmp_path, monkeypatch):
    """Another writer holds the file for the whole test: the child gives up after its busy
    timeout (shortened here), and the error is one the connection's retries take."""
    from sync_assets.dialects.sqlite import DIALECT

    database = tmp_path / "cache.sqlite"
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t__sync_new (id INTEGER PRIMARY KEY, name TEXT)")
    monkeypatch.setattr(sqlite_ingest, "BUSY_TIMEOUT_MS", 50)
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    engine = sa.create_engine(f"sqlite:///{database}")
    # More than a pipe holds: the child, stopped at its first insert, leaves the parent a broken
    # pipe mid-stream, and its own error must still be the one raised.
    rows = 300_000
    frames = (pl.DataFrame({"id": range(n * rows, (n + 1) * rows), "name": "x" * 20}) for n in range(3))
    try:
        with (
            engine.connect() as conn,
            pytest.raises(sqlite3.OperationalError, match="database is locked") as caught,
        ):
            DIALECT.load_separately(conn, sa.Table("t__sync_new", sa.MetaData()), frames)
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    assert DIALECT.is_transient(caught.value)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM t__sync_new").fetchone() == (0,)
