"""Oracle -> SQLite through Dagster, mass then daily, on a real server (SYNC_TEST_ORACLE_URL).

e.g. SYNC_TEST_ORACLE_URL=oracle+oracledb://sync:pw@localhost:1521/?service_name=FREEPDB1
(gvenzl/oracle-free). The table gets JDE's shape: upper-case names, bare NUMBERs, DATE with time.
"""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from sync_assets_tests.helpers import make_harness, materialization

URL = os.environ.get("SYNC_TEST_ORACLE_URL")
pytestmark = pytest.mark.skipif(
    URL is None, reason="SYNC_TEST_ORACLE_URL not set: Oracle integration tests skipped"
)

TABLE = "SYNC_IT_F4801"
CREATE = f"""CREATE TABLE {TABLE} (
    WADOCO NUMBER PRIMARY KEY,
    WAAMT NUMBER,
    WAQTY NUMBER(15, 2),
    WAUPMJ NUMBER(6, 0),
    WADL01 NVARCHAR2(30),
    WACREATED DATE,
    WACHANGED TIMESTAMP(9) NOT NULL
)"""
INSERT = sa.text(
    f"INSERT INTO {TABLE} VALUES (:doco, :amt, :qty, :upmj, :dl01, "
    "TO_DATE(:created, 'YYYY-MM-DD HH24:MI:SS'), TO_TIMESTAMP(:changed, 'YYYY-MM-DD HH24:MI:SS.FF9'))"
)
# Everything as exact text, whatever the driver would make of it.
READ_SOURCE = sa.text(
    f"SELECT TO_CHAR(WADOCO), TO_CHAR(WAAMT), TO_CHAR(WAQTY), WAUPMJ, WADL01, "
    f"TO_CHAR(WACREATED, 'YYYY-MM-DD HH24:MI:SS'), TO_CHAR(WACHANGED, 'YYYY-MM-DD HH24:MI:SS.FF9') "
    f"FROM {TABLE} ORDER BY WADOCO"
)


def doco(i: int) -> Decimal:
    return Decimal("12345678901234567890123456789012345678") + i  # 38 digits


def row(i: int, *, changed: str, name: str = "Zürich 東京") -> dict[str, object]:
    return {
        "doco": doco(i),
        "amt": Decimal("0.12345678901234567890123456789012345678") if i % 2 else Decimal(-i) / 7,
        "qty": Decimal(f"{i}.25"),
        "upmj": 126000 + i,
        "dl01": f"{name} {i}",
        "created": f"2026-03-{1 + i % 28:02d} 13:{i % 60:02d}:59",
        "changed": changed,
    }


@pytest.fixture
def oracle_source():
    engine = sa.create_engine(URL)  # type: ignore[arg-type]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"BEGIN EXECUTE IMMEDIATE 'DROP TABLE {TABLE}'; EXCEPTION WHEN OTHERS THEN NULL; END;"
        )
        conn.exec_driver_sql(CREATE)
        conn.execute(
            INSERT, [row(i, changed=f"2026-03-01 08:00:{i % 60:02d}.12345678{i % 10}") for i in range(1, 301)]
        )
    yield engine
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {TABLE}")
    engine.dispose()


def source_rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(READ_SOURCE).all()
    # The SQLite cache keeps microseconds (allow_lossy below): compare the first 6 digits.
    return [(Decimal(d), Decimal(a), Decimal(q), int(u), n, c, ch[:26]) for d, a, q, u, n, c, ch in rows]


def cache_rows(url: sa.URL) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        table = sa.Table("work_orders", sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(table).order_by(sa.cast(table.c.WADOCO, sa.Numeric))).all()
    engine.dispose()
    return [
        (Decimal(d), Decimal(str(a)), Decimal(str(q)), int(u), n, str(c)[:19], str(ch)[:26])
        for d, a, q, u, n, c, ch, *_ in rows  # a cache's _sync_hash left out
    ]


def test_oracle_mass_then_daily(tmp_path, monkeypatch, oracle_source, make_database):
    cache_url = make_database("sqlite")
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=oracle_source.url,
        cache_url=cache_url,
        tables=[
            {
                "name": "work_orders",
                "source_table": TABLE,
                "primary_key": ["WADOCO"],
                "updated_at": "WACHANGED",
                "allow_lossy": ["WACHANGED"],  # TIMESTAMP(9) into SQLite's microseconds
            }
        ],
        defaults={"batch_size": 70},
    )
    result = harness.sync("work_orders", "mass")
    assert result.success
    assert materialization(result)["dagster/row_count"] == 300
    assert cache_rows(cache_url) == source_rows(oracle_source)

    with oracle_source.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE WADOCO IN (:a, :b)"), {"a": doco(5), "b": doco(6)})
        later = "2026-03-02 09:30:00.987654321"
        conn.execute(INSERT, [row(i, changed=later, name="changed") for i in (5, 6, 301, 302)])
    result = harness.sync("work_orders", "daily")
    assert result.success
    meta = materialization(result)
    assert meta["sync_assets/mode"] == "incremental"
    assert meta["dagster/row_count"] == 302
    assert cache_rows(cache_url) == source_rows(oracle_source)
    assert datetime.fromisoformat(meta["sync_assets/watermark_to"]) == datetime(2026, 3, 2, 9, 30, 0, 987654)


def test_oracle_hash_changes_and_deletes(tmp_path, monkeypatch, oracle_source, make_database):
    """`change_detection: hash` on Oracle: changes that leave WACHANGED alone (a name, a DATE's
    seconds) are found by ORA_HASH per column, a deleted row by its missing 38-digit key."""
    cache_url = make_database("sqlite")
    spec = {
        "name": "work_orders",
        "source_table": TABLE,
        "primary_key": ["WADOCO"],
        "change_detection": "hash",
        "deletes": {"mode": "hard"},
        "allow_lossy": ["WACHANGED"],
    }
    harness = make_harness(
        tmp_path, monkeypatch, source_url=oracle_source.url, cache_url=cache_url, tables=[spec]
    )
    assert harness.sync("work_orders", "mass").success
    with oracle_source.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {TABLE} SET WADL01 = 'no new timestamp' WHERE WADOCO = :d"), {"d": doco(40)}
        )
        conn.execute(
            sa.text(f"UPDATE {TABLE} SET WACREATED = WACREATED + 1 / 86400 WHERE WADOCO = :d"),
            {"d": doco(41)},
        )
        conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE WADOCO = :d"), {"d": doco(200)})
    result = harness.sync("work_orders", "daily")
    assert result.success
    meta = materialization(result)
    assert (meta["sync_assets/rows_read"], meta["sync_assets/rows_deleted"]) == (2, 1)
    assert cache_rows(cache_url) == source_rows(oracle_source)
