"""SAP ASE -> SQLite through Dagster, mass then daily, on a real server (SYNC_TEST_SYBASE_URL),
read as rows and through arrow-odbc.

e.g. SYNC_TEST_SYBASE_URL=sybase+pyodbc://sa:pw@localhost:5000/tempdb?driver=FreeTDS&TDS_Version=5.0
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from sync_assets.dialects import get_dialect
from sync_assets_tests.helpers import make_harness, materialization

URL = os.environ.get("SYNC_TEST_SYBASE_URL")
pytestmark = pytest.mark.skipif(
    URL is None, reason="SYNC_TEST_SYBASE_URL not set: Sybase integration tests skipped"
)

TABLE = "sync_it_account"
CREATE = f"""CREATE TABLE {TABLE} (
    acct_id int NOT NULL PRIMARY KEY,
    name univarchar(40) NULL,
    balance money NULL,
    fee smallmoney NULL,
    ratio numeric(30, 10) NULL,
    flags tinyint NOT NULL,
    big unsigned bigint NULL,
    active bit NOT NULL,
    opened smalldatetime NULL,
    changed bigdatetime NOT NULL,
    touched datetime NOT NULL
)"""
BASE = datetime(2026, 3, 1, 8, 0, 0, 123456)


def row(i: int, *, changed: datetime, name: str = "Zürich") -> dict[str, object]:
    return {
        "acct_id": i,
        "name": f"{name} {i}",
        "balance": Decimal(f"{i * 1000}.1234"),
        "fee": Decimal(f"-{i}.5000"),
        "ratio": Decimal(f"{i}.0123456789"),
        "flags": 255 - i % 256,
        "big": 18446744073709551615 - i,
        "active": i % 2 == 0,
        "opened": datetime(2026, 1, 1, 12, i % 60),
        "changed": changed,
        "touched": datetime(2026, 1, 2, 3, 4, 5, 3000),  # ASE datetime keeps 1/300 s: .003
    }


@pytest.fixture
def sybase_source():
    engine = sa.create_engine(URL)  # type: ignore[arg-type]
    get_dialect("sybase").prepare_engine(engine, role="source")  # reflects bigdatetime, unsigned bigint
    metadata = sa.MetaData()
    with engine.begin() as conn:
        if sa.inspect(conn).has_table(TABLE):
            conn.exec_driver_sql(f"DROP TABLE {TABLE}")
        conn.exec_driver_sql(CREATE)
    table = sa.Table(TABLE, metadata, autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [row(i, changed=BASE + timedelta(seconds=i, microseconds=i)) for i in range(1, 201)],
        )
    yield engine, table
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {TABLE}")
    engine.dispose()


def rows(url: sa.URL | str, name: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        table = sa.Table(name, sa.MetaData(), autoload_with=conn)
        result = conn.execute(sa.select(table).order_by(table.c.acct_id)).all()
    engine.dispose()
    return [
        (int(a), n, Decimal(str(b)), Decimal(str(f)), Decimal(str(r)), int(fl), int(bg), bool(ac), o, c, t)
        for a, n, b, f, r, fl, bg, ac, o, c, t, *_ in result  # a cache's _sync_hash left out
    ]


# Rows through pyodbc, and arrow-odbc's Arrow batches (`arrow_odbc: true`, dialects/odbc_reader.py).
READERS = pytest.mark.parametrize("reader", ["rows", "arrow_odbc"])


def _connection(reader: str) -> dict[str, object]:
    if reader == "arrow_odbc":
        pytest.importorskip("arrow_odbc", reason="arrow-odbc not installed")
        return {"arrow_odbc": True}
    return {}


@READERS
def test_sybase_mass_then_daily(tmp_path, monkeypatch, sybase_source, make_database, reader):
    engine, table = sybase_source
    cache_url = make_database("sqlite")
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=engine.url,
        cache_url=cache_url,
        tables=[
            {"name": "accounts", "source_table": TABLE, "primary_key": ["acct_id"], "updated_at": "changed"}
        ],
        defaults={"batch_size": 50},
        connection=_connection(reader),
    )
    result = harness.sync("accounts", "mass")
    assert result.success
    assert materialization(result)["dagster/row_count"] == 200
    assert rows(cache_url, "accounts") == rows(engine.url, TABLE)

    later = BASE + timedelta(days=1, microseconds=654321)
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.acct_id.in_([7, 8])))
        conn.execute(table.insert(), [row(i, changed=later, name="changed") for i in (7, 8, 201)])
    result = harness.sync("accounts", "daily")
    assert result.success
    meta = materialization(result)
    assert meta["sync_assets/mode"] == "incremental"
    assert meta["dagster/row_count"] == 201
    assert rows(cache_url, "accounts") == rows(engine.url, TABLE)


@READERS
def test_sybase_hash_changes_and_deletes(tmp_path, monkeypatch, sybase_source, make_database, reader):
    """`change_detection: hash` on ASE: rows changed without a new `changed` are found by their
    hashes (hashbytes per column, computed by ASE), a deleted one by its missing key."""
    engine, table = sybase_source
    cache_url = make_database("sqlite")
    spec = {
        "name": "accounts",
        "source_table": TABLE,
        "primary_key": ["acct_id"],
        "change_detection": "hash",
        "deletes": {"mode": "hard"},
    }
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=engine.url,
        cache_url=cache_url,
        tables=[spec],
        connection=_connection(reader),
    )
    assert harness.sync("accounts", "mass").success
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.acct_id.in_([3, 90])).values(name="no new timestamp"))
        conn.execute(
            sa.update(table).where(table.c.acct_id == 150).values(opened=datetime(2026, 1, 1, 12, 59, 30))
        )
        conn.execute(sa.delete(table).where(table.c.acct_id == 7))
    result = harness.sync("accounts", "daily")
    assert result.success
    meta = materialization(result)
    assert (meta["sync_assets/rows_read"], meta["sync_assets/rows_deleted"]) == (3, 1)
    assert rows(cache_url, "accounts") == rows(engine.url, TABLE)
