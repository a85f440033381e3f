"""SQL Server as cache (source SQLite) and as source (cache SQLite): mass, daily, a failed sync.

Runs against the server of SYNC_TEST_MSSQL_URL, e.g.
mssql+pyodbc://sa:${PW}@localhost:1433/sync_test?driver=ODBC+Driver+18+for+SQL+Server&TrustServerCertificate=yes
Each test uses its own table names and drops them afterwards. The cache test runs twice: on the
URL's own driver, and on mssql-python (`mssql+mssqlpython`, full loads by TDS bulk copy).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sync_assets_tests.helpers import (
    BASE_TIME,
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

pytestmark = pytest.mark.skipif(
    not os.environ.get("SYNC_TEST_MSSQL_URL"),
    reason="SYNC_TEST_MSSQL_URL not set: SQL Server integration tests skipped",
)


@pytest.fixture
def mssql_table() -> Iterator[Callable[[], tuple[sa.URL, str]]]:
    """(server URL, a fresh table name); the tables and their sync_log rows go afterwards."""
    url = sa.make_url(os.environ["SYNC_TEST_MSSQL_URL"])
    names: list[str] = []

    def make() -> tuple[sa.URL, str]:
        names.append(f"orders_{uuid.uuid4().hex[:8]}")
        return url, names[-1]

    yield make
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        metadata = sa.MetaData()
        leftovers = {f"{name}__sync_new" for name in names}
        metadata.reflect(conn, only=lambda name, _: name in names or name in leftovers or name == "sync_log")
        for name in [*names, *leftovers]:
            if name in metadata.tables:
                metadata.tables[name].drop(conn)
        if "sync_log" in metadata.tables:
            log = metadata.tables["sync_log"]
            conn.execute(sa.delete(log).where(log.c.table_name.in_(names)))
    engine.dispose()


def _tables(name: str) -> list[dict[str, object]]:
    return [{"name": name, "source_table": name, "primary_key": ["id"], "updated_at": "updated_at"}]


def _changes(source_url: sa.URL, table: sa.Table) -> None:
    """40 updates after the watermark and 30 new rows."""
    later = BASE_TIME + timedelta(days=1)
    changed = [order_row(i, updated_at=later + timedelta(seconds=i), version=1) for i in range(100, 2500, 60)]
    added = [order_row(i, updated_at=later + timedelta(minutes=5, seconds=i)) for i in range(2501, 2531)]
    upsert_source(source_url, table, changed + added)


def on_mssql_python(url: sa.URL) -> sa.URL:
    """The same server through mssql-python, which bundles its own ODBC driver."""
    return url.set(
        drivername="mssql+mssqlpython", query={k: v for k, v in url.query.items() if k != "driver"}
    )


@pytest.mark.parametrize("driver", ["url", "mssqlpython"])
def test_mssql_cache_mass_daily_and_a_failed_sync(
    tmp_path, monkeypatch, make_sqlite_database, mssql_table, driver
):
    source_url = make_sqlite_database()
    cache_url, name = mssql_table()
    if driver == "mssqlpython":
        cache_url = on_mssql_python(cache_url)
    table = create_source(source_url, [order_row(i) for i in range(1, 2501)], name=name, primary_key=False)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=_tables(name),
        defaults={"batch_size": 700},
    )

    result = harness.sync(name, "mass")
    assert result.success
    assert read_rows(cache_url, name) == read_rows(source_url, name)
    assert materialization(result)["dagster/row_count"] == 2500

    _changes(source_url, table)
    result = harness.sync(name, "daily")
    assert result.success
    assert read_rows(cache_url, name) == read_rows(source_url, name)
    meta = materialization(result)
    assert (meta["sync_assets/mode"], meta["sync_assets/rows_inserted"]) == ("incremental", 30)
    # The lookback re-reads all 2,500 cached keys; the MERGE updates only the 40 changed (issue 10).
    assert (meta["sync_assets/rows_updated"], meta["sync_assets/rows_unchanged"]) == (40, 2460)
    assert meta["dagster/row_count"] == 2530
    # On mssql-python those 4 batches were bulk-copied into a committed heap, dropped after the MERGE.
    assert not [t for t in staging_tables(cache_url) if name in t]

    # A duplicate key in the source: the full reload is rolled back, the cache keeps its rows.
    before = read_rows(cache_url, name)
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(table.insert(), [order_row(7, version=9)])
    engine.dispose()
    result = harness.sync(name, "mass")
    assert not result.success
    assert "duplicate (or NULL) primary key values (id)" in failure_message(result)
    assert read_rows(cache_url, name) == before
    assert [r["status"] for r in sync_log_rows(cache_url, name)] == ["succeeded", "succeeded", "failed"]
    assert not [t for t in staging_tables(cache_url) if name in t]


@pytest.mark.parametrize("reader", ["url", "arrow_odbc"])
def test_mssql_source_mass_and_daily(tmp_path, monkeypatch, make_sqlite_database, mssql_table, reader):
    """Read by the URL's driver, and (pyodbc URLs) by arrow-odbc's Arrow batches."""
    source_url, name = mssql_table()
    connection: dict[str, object] = {}
    if reader == "arrow_odbc":
        pytest.importorskip("arrow_odbc", reason="arrow-odbc not installed")
        if source_url.get_driver_name() != "pyodbc":
            pytest.skip("arrow_odbc reads pyodbc URLs")
        connection = {"arrow_odbc": True}
    cache_url = make_sqlite_database()
    table = create_source(source_url, [order_row(i) for i in range(1, 2501)], name=name)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=_tables(name),
        defaults={"batch_size": 700},
        connection=connection,
    )

    assert harness.sync(name, "mass").success
    assert read_rows(cache_url, name) == read_rows(source_url, name)

    _changes(source_url, table)
    result = harness.sync(name, "daily")
    assert result.success
    assert read_rows(cache_url, name) == read_rows(source_url, name)
    assert materialization(result)["dagster/row_count"] == 2530


def test_mssql_source_hash_changes_and_cache_soft_deletes(
    tmp_path, monkeypatch, make_sqlite_database, mssql_table
):
    """SQL Server both ways: as a `change_detection: hash` source (HASHBYTES over every column), and
    as a cache whose soft deletes are stamped in the commit."""
    source_url, name = mssql_table()
    cache_url = make_sqlite_database()
    table = create_source(source_url, [order_row(i) for i in range(1, 2501)], name=name)
    spec = {"name": name, "source_table": name, "primary_key": ["id"], "change_detection": "hash"}
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**spec, "deletes": {"mode": "hard"}}],
    )
    assert harness.sync(name, "mass").success
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id.in_([10, 1200])).values(name="no new timestamp"))
        conn.execute(sa.update(table).where(table.c.id == 2000).values(ratio=1 / 3))
        conn.execute(sa.delete(table).where(table.c.id.in_([5, 6])))
    engine.dispose()
    result = harness.sync(name, "daily")
    assert result.success, failure_message(result)
    meta = materialization(result)
    assert (meta["sync_assets/rows_read"], meta["sync_assets/rows_deleted"]) == (3, 2)
    assert meta["sync_assets/hashes_compared"] < 500

    source_url = make_sqlite_database()
    cache_url, name = mssql_table()
    table = create_source(source_url, [order_row(i) for i in range(1, 501)], name=name)
    soft = {**_tables(name)[0], "deletes": {"mode": "soft", "column": "deleted_at"}}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[soft])
    assert harness.sync(name, "mass").success
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.id.in_([1, 250])))
    engine.dispose()
    result = harness.sync(name, "daily")
    assert result.success, failure_message(result)
    assert materialization(result)["sync_assets/rows_deleted"] == 2
    cache = sa.create_engine(cache_url)
    with cache.connect() as conn:
        stamped = conn.execute(sa.text(f"SELECT id FROM {name} WHERE deleted_at IS NOT NULL")).scalars().all()
    cache.dispose()
    assert sorted(int(i) for i in stamped) == [1, 250]
