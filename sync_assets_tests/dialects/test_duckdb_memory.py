"""DuckDB's buffer pool is bounded for sync_assets' connections (its default, 80% of RAM, grew a
process with the table it synced), unless the URL sets its own `memory_limit`; a table's plain
scan runs under a smaller one, which it gives back."""

from __future__ import annotations

import os

import duckdb
import polars as pl
import pytest
import sqlalchemy as sa

from sync_assets.dialects import duckdb as duckdb_dialect
from sync_assets.dialects.duckdb import memory_limit, scan_memory_limit
from sync_assets.resources.database import SqlDatabase

SETTING = sa.text("SELECT current_setting('memory_limit')")
TOO_SMALL = "256KB"  # a single block of DuckDB's: no scan fits


def _setting(resource: SqlDatabase, role: str) -> str:
    with resource.engine(role=role) as (engine, _dialect), engine.connect() as conn:  # type: ignore[arg-type]
        return conn.execute(SETTING).scalar_one()


def _mib(limit: str) -> float:
    number, unit = limit.split()
    return float(number) * {"MiB": 1, "GiB": 1024}[unit]


def test_our_connections_cap_the_buffer_pool(tmp_path):
    expected = int(memory_limit().removesuffix("MB")) * 10**6 / 2**20
    for role in ("cache", "source"):
        resource = SqlDatabase(name="db", url=f"duckdb:///{tmp_path / 'db.duckdb'}")
        assert abs(_mib(_setting(resource, role)) - expected) < 1, role


def test_a_memory_limit_in_the_url_wins(tmp_path):
    resource = SqlDatabase(name="db", url=f"duckdb:///{tmp_path / 'db.duckdb'}?memory_limit=1GB")
    assert abs(_mib(_setting(resource, "cache")) - 10**9 / 2**20) < 1  # DuckDB shows 1GB as 953.6 MiB


def _source_with_rows(path, rows: int = 5_000) -> SqlDatabase:
    with duckdb.connect(str(path)) as db:
        db.execute(f"CREATE TABLE orders AS SELECT i AS id, 'order ' || i AS label FROM range({rows}) t(i)")
    return SqlDatabase(name="erp", url=f"duckdb:///{path}")


def _scan(conn: sa.Connection, dialect, statement=None, *, batch_size: int = 1_000):
    """The dialect's batches of `orders` (or of what `statement` makes of it)."""
    orders = sa.Table("orders", sa.MetaData(), autoload_with=conn)
    return dialect.arrow_batches(
        conn,
        sa.select(orders) if statement is None else statement(orders),
        schema={"id": pl.Int64(), "label": pl.String()},
        table="orders",
        batch_size=batch_size,
    )


def _limits_while_scanning(resource: SqlDatabase, statement=None, *, close_early: bool = False) -> list[str]:
    """The buffer pool's limit before the scan, after its first batch, and once it has ended."""
    with resource.engine(role="source") as (engine, dialect), engine.connect() as conn:
        seen = [conn.execute(SETTING).scalar_one()]
        batches = _scan(conn, dialect, statement)
        frames = [next(batches)]
        seen.append(conn.execute(SETTING).scalar_one())
        if close_early:
            batches.close()
        else:
            frames.extend(batches)
            assert sum(frame.height for frame in frames) == 5_000
        seen.append(conn.execute(SETTING).scalar_one())
    return seen


def test_a_table_scan_runs_under_a_smaller_pool_restored_after_it(tmp_path):
    resource = _source_with_rows(tmp_path / "erp.duckdb")
    before, during, after = _limits_while_scanning(resource)
    with duckdb.connect(str(tmp_path / "erp.duckdb")) as db:
        (threads,) = db.execute("SELECT current_setting('threads')").fetchone()
    expected = scan_memory_limit(threads=threads, columns=2)
    assert abs(_mib(during) - int(expected.removesuffix("MB")) * 10**6 / 2**20) < 1
    assert during != before and after == before
    # A sync that stops after its first batch (cancelled, failed) restores it too.
    before, during, after = _limits_while_scanning(resource, close_early=True)
    assert during != before and after == before


def test_the_scan_leaves_the_pool_alone_where_a_smaller_one_could_fail(tmp_path):
    resource = _source_with_rows(tmp_path / "erp.duckdb")
    # A catalog query may sort or join: the scan of a subquery keeps the pool.
    ordered = lambda orders: sa.select(sa.select(orders).order_by(orders.c.label).subquery())  # noqa: E731
    assert len(set(_limits_while_scanning(resource, ordered))) == 1
    # A view, for the same reason.
    with duckdb.connect(str(tmp_path / "erp.duckdb")) as db:
        db.execute("CREATE VIEW orders_by_label AS SELECT * FROM orders ORDER BY label")
    view = sa.Table(
        "orders_by_label", sa.MetaData(), sa.Column("id", sa.BigInteger), sa.Column("label", sa.String)
    )
    by_label = lambda _orders: sa.select(view)  # noqa: E731
    assert len(set(_limits_while_scanning(resource, by_label))) == 1
    # The user's own limit.
    own = SqlDatabase(name="erp", url=f"duckdb:///{tmp_path / 'erp.duckdb'}?memory_limit=1GB")
    assert len(set(_limits_while_scanning(own))) == 1
    # The same file as this process's cache: one DuckDB instance, whose load must keep the pool.
    with SqlDatabase(name="cache", url=f"duckdb:///{tmp_path / 'erp.duckdb'}").engine(role="cache"):
        pass
    assert len(set(_limits_while_scanning(resource))) == 1


def test_the_scan_pool_grows_with_columns_and_threads_below_the_connections(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # the connection's pool: 256 MB
    assert scan_memory_limit(threads=2, columns=20) == "64MB"  # the floor
    assert scan_memory_limit(threads=2, columns=100) == "100MB"
    assert scan_memory_limit(threads=2, columns=251) == "251MB"
    assert scan_memory_limit(threads=8, columns=251) is None  # 1,004 MB: the connection's is smaller
    monkeypatch.setattr(os, "cpu_count", lambda: 8)  # 1,024 MB
    assert scan_memory_limit(threads=8, columns=251) == "1004MB"


def _held_back(conn: sa.Connection) -> None:
    """Rows that cannot leave memory (no spill directory): DuckDB refuses a smaller pool now."""
    raw = conn.connection.driver_connection
    raw.execute("SET temp_directory = ''")
    raw.execute("CREATE TEMP TABLE held AS SELECT i, repeat('x', 100) AS s FROM range(100000) t(i)")
    with pytest.raises(duckdb.OutOfMemoryException):
        raw.execute(f"SET memory_limit = '{TOO_SMALL}'")


def _scan_too_big(conn: sa.Connection) -> None:
    """The pool can shrink to TOO_SMALL now, and a scan under it fails."""
    before = conn.execute(SETTING).scalar_one()
    with conn.connection.driver_connection.duplicate() as raw:
        raw.execute(f"SET memory_limit = '{TOO_SMALL}'")
        with pytest.raises((duckdb.OutOfMemoryException, OSError), match="Out of Memory"):
            raw.execute("SELECT * FROM orders").fetchall()
    with conn.connection.driver_connection.duplicate() as raw:
        raw.execute(f"SET memory_limit = '{memory_limit()}'")
    assert conn.execute(SETTING).scalar_one() == before


@pytest.mark.parametrize("prepare", [_scan_too_big, _held_back], ids=["scan_too_big", "pool_held"])
def test_a_smaller_pool_that_does_not_fit_gives_way_to_the_connections(tmp_path, monkeypatch, prepare):
    """Too small for this scan (found before its first batch), or refused because more of the pool
    is held now: the scan reads every row under the connection's pool."""
    resource = _source_with_rows(tmp_path / "erp.duckdb", rows=200_000)
    monkeypatch.setattr(duckdb_dialect, "scan_memory_limit", lambda **_: TOO_SMALL)
    with resource.engine(role="source") as (engine, dialect), engine.connect() as conn:
        prepare(conn)
        before = conn.execute(SETTING).scalar_one()
        frames = _scan(conn, dialect, batch_size=10_000)
        assert sum(frame.height for frame in frames) == 200_000
        assert conn.execute(SETTING).scalar_one() == before


def test_a_scan_ended_after_its_connection_closed_ends_quietly(tmp_path):
    """The read-ahead thread ends a stopped sync's scan late, its connection already closed."""
    resource = _source_with_rows(tmp_path / "erp.duckdb")
    with resource.engine(role="source") as (engine, dialect), engine.connect() as conn:
        batches = _scan(conn, dialect)
        assert next(batches).height == 1_000
        conn.invalidate()  # closes the DB-API connection
        batches.close()


def _keyed_frames(batches: int, rows: int):
    """`batches` frames of `rows` text keys each: a commit of more than a row group (122,880 rows)
    goes to the file, not the WAL, so no automatic checkpoint follows it."""
    for b in range(batches):
        ids = pl.int_range(b * rows, (b + 1) * rows, eager=True)
        yield pl.DataFrame({"id": "order-" + ids.cast(pl.String).str.zfill(12), "qty": ids})


def test_a_full_load_checkpoints_the_key_index_before_it_fills_the_pool(tmp_path):
    """Without the checkpoints, the key's index of these 1.2M rows filled a 48 MB pool at 900,000
    rows (OutOfMemory); the same happened under the default pool at 30M BIGINT keys."""
    resource = SqlDatabase(name="cache", url=f"duckdb:///{tmp_path / 'cache.duckdb'}?memory_limit=48MB")
    with resource.engine(role="cache") as (engine, dialect), engine.connect() as conn:
        table = sa.Table(
            "orders",
            sa.MetaData(),
            sa.Column("id", sa.String, primary_key=True),
            sa.Column("qty", sa.BigInteger),
        )
        with conn.begin():
            table.create(conn)
        dialect.load_separately(conn, table, _keyed_frames(8, 150_000))
        assert conn.execute(sa.select(sa.func.count(sa.distinct(table.c.id)))).scalar_one() == 1_200_000
        raw = conn.connection.driver_connection
        assert duckdb_dialect._index_bytes(raw) <= duckdb_dialect._pool_bytes(raw) // 4
