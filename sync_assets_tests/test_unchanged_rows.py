"""An incremental writes only the rows whose values differ from the cache, and its counts say so
(sync_assets issue 10: a daily without source changes reported "64 updated" and rewrote them).

What the database wrote is read from the database itself: a trigger on the target (SQLite,
PostgreSQL), the rows' xmin and xmax (PostgreSQL), and the row count the upsert statement
reports (every cache; DuckDB has no triggers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from sync_assets_tests.helpers import (
    create_source,
    make_harness,
    materialization,
    order_row,
    read_rows,
    sync_log_rows,
    upsert_source,
)

CACHES = ["sqlite", "postgresql", "duckdb"]
ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
ROWS = 200


@pytest.fixture
def upsert_rowcounts() -> Iterator[list[int]]:
    """The row count each upsert into `orders` reported, as the driver hands it over."""
    counts: list[int] = []

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith("INSERT INTO orders") and "ON CONFLICT" in statement:
            counts.append(cursor.rowcount)

    sa.event.listen(sa.Engine, "after_cursor_execute", after)
    yield counts
    sa.event.remove(sa.Engine, "after_cursor_execute", after)


def record_writes(url: sa.URL) -> None:
    """A trigger that notes every row the target gets written (SQLite and PostgreSQL)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE written (id BIGINT, op VARCHAR(6))")
        if engine.dialect.name == "sqlite":
            for op in ("INSERT", "UPDATE"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER orders_{op.lower()} AFTER {op} ON orders "
                    f"BEGIN INSERT INTO written VALUES (NEW.id, '{op}'); END"
                )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION note_write() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN INSERT INTO written VALUES (NEW.id, TG_OP); RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER orders_written AFTER INSERT OR UPDATE ON orders "
                "FOR EACH ROW EXECUTE FUNCTION note_write()"
            )
    engine.dispose()


def take_writes(url: sa.URL) -> set[tuple[int, str]]:
    """The (id, operation) pairs the trigger noted since the last call."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        noted = {(int(i), op) for i, op in conn.exec_driver_sql("SELECT id, op FROM written")}
        conn.exec_driver_sql("DELETE FROM written")
    engine.dispose()
    return noted


def row_versions(url: sa.URL) -> dict[int, tuple[str, str]]:
    """PostgreSQL: each row's (xmin, xmax). A rewrite makes a new xmin; a row lock sets xmax."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, xmin::text, xmax::text FROM orders").all()
    engine.dispose()
    return {int(i): (xmin, xmax) for i, xmin, xmax in rows}


def counts(meta: dict[str, Any]) -> tuple[int, int, int]:
    return tuple(meta[f"sync_assets/rows_{what}"] for what in ("inserted", "updated", "unchanged"))


def logged_counts(row: dict[str, Any]) -> tuple[int, int, int, int]:
    return tuple(row[f"rows_{what}"] for what in ("written", "inserted", "updated", "unchanged"))


@pytest.mark.parametrize("cache_kind", CACHES)
def test_only_changed_rows_are_written_and_counted(
    tmp_path, monkeypatch, make_database, upsert_rowcounts, cache_kind
):
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    table = create_source(source_url, [order_row(i) for i in range(1, ROWS + 1)])
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    assert harness.sync("orders", "mass").success
    triggers = cache_kind != "duckdb"
    if triggers:
        record_writes(cache_url)
    before = row_versions(cache_url) if cache_kind == "postgresql" else None

    # No source change: the lookback re-reads every row, and none of them is written.
    result = harness.sync("orders", "daily")
    assert result.success
    meta = materialization(result)
    assert meta["sync_assets/rows_read"] == ROWS
    assert counts(meta) == (0, 0, ROWS)
    assert logged_counts(sync_log_rows(cache_url, "orders")[-1]) == (0, 0, 0, ROWS)
    assert upsert_rowcounts == [0]
    if triggers:
        assert take_writes(cache_url) == set()
    if before is not None:
        # Not rewritten (same xmin), not even locked (xmax 0): ON CONFLICT never met these rows.
        assert row_versions(cache_url) == before
        assert {xmax for _, xmax in before.values()} == {"0"}
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")

    # Changes the lookback re-reads, most with their old updated_at: only the value tells.
    def changed(i: int, **values: Any) -> dict[str, Any]:
        return {**order_row(i), **values}

    old = {i: order_row(i) for i in (11, 21, 30, 40, 50)}
    assert old[11]["note"] is None and old[21]["big_amount"] is not None
    changes = [
        changed(11, note="now set"),  # NULL -> value, nothing else
        changed(21, big_amount=None),  # value -> NULL, nothing else
        changed(30, name=old[30]["name"].lower()),  # case only
        changed(40, code=old[40]["code"] + " "),  # a trailing space only
        changed(50, payload=old[50]["payload"] + b"\x00"),  # a trailing zero byte only
        order_row(60, updated_at=order_row(ROWS)["updated_at"] + timedelta(minutes=1), version=1),
    ]
    added = [
        order_row(i, updated_at=order_row(ROWS)["updated_at"] + timedelta(minutes=2)) for i in (201, 202, 203)
    ]
    upsert_source(source_url, table, changes + added)

    result = harness.sync("orders", "daily")
    assert result.success
    meta = materialization(result)
    assert meta["sync_assets/rows_read"] == ROWS + 3
    assert counts(meta) == (3, 6, ROWS - 6)
    (said,) = [
        e.user_message for e in harness.instance.all_logs(result.run_id) if "sync done" in e.user_message
    ]
    done = (
        f"orders: incremental sync done, {ROWS + 3} rows read, 3 inserted, 6 updated, {ROWS - 6} unchanged, "
        "0 deleted"
    )
    assert re.fullmatch(rf"{done} in \d+\.\d\d s", said), said
    assert logged_counts(sync_log_rows(cache_url, "orders")[-1]) == (9, 3, 6, ROWS - 6)
    assert upsert_rowcounts == [0, 9]
    updated = {row["id"] for row in changes}
    if triggers:
        assert take_writes(cache_url) == {(i, "UPDATE") for i in updated} | {
            (i, "INSERT") for i in (201, 202, 203)
        }
    if before is not None:
        after = row_versions(cache_url)
        assert {i for i in before if after[i][0] != before[i][0]} == updated
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")

    # A full load inserts every row and leaves none unchanged.
    result = harness.sync("orders", "mass")
    assert result.success
    assert counts(materialization(result)) == (ROWS + 3, 0, 0)
    assert logged_counts(sync_log_rows(cache_url, "orders")[-1]) == (ROWS + 3, ROWS + 3, 0, 0)


RATIOS = {1: math.nan, 2: math.inf, 3: -math.inf, 4: None, 5: 1.5, 6: 0.0}
NAN_PAIRS = [
    ("postgresql", "sqlite"),
    ("postgresql", "postgresql"),
    ("duckdb", "duckdb"),
    ("duckdb", "postgresql"),
]


@pytest.mark.parametrize(("source_kind", "cache_kind"), NAN_PAIRS, ids=[f"{s}-to-{c}" for s, c in NAN_PAIRS])
def test_nan_equals_itself_as_the_cache_stores_it(
    tmp_path, monkeypatch, make_database, upsert_rowcounts, source_kind, cache_kind
):
    """PostgreSQL and DuckDB hold NaN as equal to NaN (SQLite stores it as NULL): a re-read NaN
    is unchanged, a change to or from NaN is an update."""
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    engine = sa.create_engine(source_url)
    source = sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("ratio", sa.Double),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    stamp = order_row(1)["updated_at"]
    source.create(engine)
    with engine.begin() as conn:
        conn.execute(source.insert(), [{"id": i, "ratio": r, "updated_at": stamp} for i, r in RATIOS.items()])
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    assert harness.sync("orders", "mass").success

    result = harness.sync("orders", "daily")
    assert result.success
    assert counts(materialization(result)) == (0, 0, len(RATIOS))

    with engine.begin() as conn:
        conn.execute(sa.update(source).where(source.c.id == 1).values(ratio=2.0))
        conn.execute(sa.update(source).where(source.c.id == 5).values(ratio=math.nan))
    engine.dispose()
    result = harness.sync("orders", "daily")
    assert result.success
    assert counts(materialization(result)) == (0, 2, len(RATIOS) - 2)
    assert upsert_rowcounts == [0, 2]


def test_a_one_nanosecond_change_is_an_update(tmp_path, monkeypatch, make_database, upsert_rowcounts):
    """DuckDB caches TIMESTAMP_NS: values compare at full precision, equal when read again."""
    source_url, cache_url = make_database("duckdb"), make_database("duckdb")
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, stamp TIMESTAMP_NS, updated_at TIMESTAMP NOT NULL)"
        )
        conn.exec_driver_sql(
            "INSERT INTO orders VALUES (1, '2026-05-01 12:00:00.123456789', '2026-05-01 12:00:00'), "
            "(2, '1900-01-01 00:00:00.000000001', '2026-05-01 12:00:00'), (3, NULL, '2026-05-01 12:00:00')"
        )
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    assert harness.sync("orders", "mass").success
    result = harness.sync("orders", "daily")
    assert result.success
    assert counts(materialization(result)) == (0, 0, 3)

    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE orders SET stamp = '2026-05-01 12:00:00.123456790' WHERE id = 1")
        conn.exec_driver_sql("UPDATE orders SET stamp = '2026-05-01 12:00:00.000000001' WHERE id = 3")
    engine.dispose()
    result = harness.sync("orders", "daily")
    assert result.success
    assert counts(materialization(result)) == (0, 2, 1)
    assert upsert_rowcounts == [0, 2]
    engine = sa.create_engine(cache_url)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT CAST(stamp AS VARCHAR) FROM orders ORDER BY id").scalars().all()
    engine.dispose()
    assert stored == [
        "2026-05-01 12:00:00.12345679",
        "1900-01-01 00:00:00.000000001",
        "2026-05-01 12:00:00.000000001",
    ]


@pytest.mark.parametrize("cache_kind", CACHES)
def test_a_table_of_key_columns_only_inserts_its_new_keys(tmp_path, monkeypatch, make_database, cache_kind):
    """Nothing to compare but the key: ON CONFLICT DO NOTHING, the re-read keys unchanged."""
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    engine = sa.create_engine(source_url)
    links = sa.Table(
        "links",
        sa.MetaData(),
        sa.Column("order_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("item_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", sa.DateTime, primary_key=True),
    )
    stamp = order_row(1)["updated_at"]
    links.create(engine)
    with engine.begin() as conn:
        conn.execute(
            links.insert(), [{"order_id": i // 3, "item_id": i % 3, "updated_at": stamp} for i in range(30)]
        )
    table = {"name": "links", "source_table": "links", "primary_key": ["order_id", "item_id", "updated_at"]}
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**table, "updated_at": "updated_at"}],
    )
    assert harness.sync("links", "mass").success
    with engine.begin() as conn:
        conn.execute(links.insert().values(order_id=0, item_id=7, updated_at=stamp))
    engine.dispose()
    result = harness.sync("links", "daily")
    assert result.success
    assert counts(materialization(result)) == (1, 0, 30)
    assert len(read_rows(cache_url, "links", key="order_id")) == 31
