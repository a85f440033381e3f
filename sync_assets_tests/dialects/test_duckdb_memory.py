"""DuckDB's buffer pool is bounded for sync_assets' connections (its default, 80% of RAM, grew a
process with the table it synced), unless the URL sets its own `memory_limit`; a table's plain
scan runs under a smaller one, which it gives back."""

from __future__ import annotations

import duckdb
import polars as pl
import sqlalchemy as sa

from sync_assets.dialects.duckdb import memory_limit, scan_memory_limit
from sync_assets.resources.database import SqlDatabase


def _setting(resource: SqlDatabase, role: str) -> str:
    with resource.engine(role=role) as (engine, _dialect), engine.connect() as conn:  # type: ignore[arg-type]
        return conn.execute(sa.text("SELECT current_setting('memory_limit')")).scalar_one()


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


def _limits_while_scanning(resource: SqlDatabase, statement=None, *, close_early: bool = False) -> list[str]:
    """The buffer pool's limit before the scan, after its first batch, and once it has ended."""
    with resource.engine(role="source") as (engine, dialect), engine.connect() as conn:
        orders = sa.Table("orders", sa.MetaData(), autoload_with=conn)
        setting = sa.text("SELECT current_setting('memory_limit')")
        seen = [conn.execute(setting).scalar_one()]
        batches = dialect.arrow_batches(
            conn,
            sa.select(orders) if statement is None else statement(orders),
            schema={"id": pl.Int64(), "label": pl.String()},
            table="orders",
            batch_size=1_000,
        )
        frames = [next(batches)]
        seen.append(conn.execute(setting).scalar_one())
        if close_early:
            batches.close()
        else:
            frames.extend(batches)
            assert sum(frame.height for frame in frames) == 5_000
        seen.append(conn.execute(setting).scalar_one())
    return seen


def test_a_table_scan_runs_under_a_smaller_pool_restored_after_it(tmp_path):
    resource = _source_with_rows(tmp_path / "erp.duckdb")
    before, during, after = _limits_while_scanning(resource)
    with duckdb.connect(str(tmp_path / "erp.duckdb")) as db:
        (threads,) = db.execute("SELECT current_setting('threads')").fetchone()
    assert abs(_mib(during) - int(scan_memory_limit(threads).removesuffix("MB")) * 10**6 / 2**20) < 1
    assert during != before and after == before
    # A sync that stops after its first batch (cancelled, failed) restores it too.
    before, during, after = _limits_while_scanning(resource, close_early=True)
    assert during != before and after == before


def test_the_scan_leaves_the_pool_alone_where_a_smaller_one_could_fail(tmp_path):
    resource = _source_with_rows(tmp_path / "erp.duckdb")
    # A catalog query may sort or join: the scan of a subquery keeps the pool.
    ordered = lambda orders: sa.select(sa.select(orders).order_by(orders.c.label).subquery())  # noqa: E731
    assert len(set(_limits_while_scanning(resource, ordered))) == 1
    # The user's own limit.
    own = SqlDatabase(name="erp", url=f"duckdb:///{tmp_path / 'erp.duckdb'}?memory_limit=1GB")
    assert len(set(_limits_while_scanning(own))) == 1
    # The same file as this process's cache: one DuckDB instance, whose load must keep the pool.
    with SqlDatabase(name="cache", url=f"duckdb:///{tmp_path / 'erp.duckdb'}").engine(role="cache"):
        pass
    assert len(set(_limits_while_scanning(resource))) == 1


def test_scan_limits_scale_with_threads():
    assert scan_memory_limit(2) == "64MB"
    assert scan_memory_limit(16) == "256MB"
