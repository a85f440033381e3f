"""ADBC's SQLite reader gives the very values of the row path, whatever storage class SQLite kept."""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal

import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from sync_assets.catalog.models import TableSpec
from sync_assets.dialects import get_dialect
from sync_assets.errors import DataError
from sync_assets.sources.sql import SqlSource

DDL = """CREATE TABLE t (id INTEGER PRIMARY KEY, d NUMERIC(15,4), ts DATETIME, day DATE, tm TIME,
    s VARCHAR(20), f FLOAT, flag BOOLEAN, raw BLOB)"""
# Each row holds values in the forms SQLite may keep them: as SQLAlchemy writes them, and as
# other writers of a legacy file do (integers in a decimal column, a REAL with more digits than
# the scale, ISO 'T' timestamps, timestamps without fraction, text that looks like a number).
ROWS = [
    (
        1,
        12345678901.1234,
        "2026-03-01 08:00:11.123467",
        "2026-01-12",
        "23:59:59.999999",
        "a😀",
        1.5,
        1,
        b"\x00",
    ),
    (2, 7, "2026-03-01T08:00:11", "2026-01-13", "08:00:00", "", -0.0, 0, b""),
    (3, 1.23456, "2026-03-01 08:00:11", "2026-01-14", "08:00", "0012", 1e300, None, None),
    (4, -0.00005, "2026-03-01 08:00:11.5", "2026-01-15", "08:00:00.5", None, 3, 1, b"\xff"),
    (5, None, None, None, None, "x" * 20, None, None, None),
]


def sqlite_source(tmp_path, rows, *, ddl=DDL):
    path = tmp_path / "legacy.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(ddl)
        db.executemany(f"INSERT INTO t VALUES ({', '.join('?' * len(rows[0]))})", rows)
    return sa.create_engine(f"sqlite:///{path}")


def read(engine, *, arrow: bool, batch_size: int = 2, log=print) -> pl.DataFrame:
    table = TableSpec(name="t", source="legacy", source_table="t", primary_key=["id"], arrow_read=arrow)
    with engine.connect() as conn:
        source = SqlSource.open(conn, get_dialect("sqlite"), table, batch_size=batch_size, log=log)  # type: ignore[arg-type]
        return pl.concat(list(source.batches(None)))


@pytest.mark.parametrize(("arrow", "path"), [(True, "the driver's Arrow batches"), (False, "rows")])
def test_the_read_path_is_told_once(tmp_path, arrow, path):
    told: list[str] = []
    read(sqlite_source(tmp_path, ROWS), arrow=arrow, batch_size=2, log=told.append)
    assert told == [f"table 't': reading through {path}"]


def test_arrow_batches_hold_the_values_of_the_row_path(tmp_path):
    engine = sqlite_source(tmp_path, ROWS)
    rows, arrow = read(engine, arrow=False), read(engine, arrow=True)
    assert_frame_equal(arrow, rows)
    assert arrow.get_column("d").to_list() == [
        Decimal("12345678901.1234"),
        Decimal("7.0000"),
        Decimal("1.2346"),
        Decimal("-0.0001"),
        None,
    ]
    assert arrow.get_column("ts").to_list()[:2] == [
        dt.datetime(2026, 3, 1, 8, 0, 11, 123467),
        dt.datetime(2026, 3, 1, 8, 0, 11),
    ]
    assert arrow.get_column("s").to_list()[:3] == ["a😀", "", "0012"]


def test_the_reader_is_adbcs(tmp_path, monkeypatch):
    """The arrow path is taken (not quietly the rows): the row reader is made to fail."""
    engine = sqlite_source(tmp_path, ROWS)
    import sync_assets.sources.sql as sql_module

    monkeypatch.setattr(sql_module, "read_batches", lambda *a, **k: pytest.fail("rows were read"))
    assert read(engine, arrow=True).height == len(ROWS)


@pytest.mark.parametrize(
    ("value", "column"), [("2026-02-30 10:00:00", "ts"), ("soon", "ts"), ("abc", "d"), ("1/2/2026", "day")]
)
def test_a_value_neither_path_reads_is_named(tmp_path, value, column):
    row = dict(zip(["id", "d", "ts", "day", "tm", "s", "f", "flag", "raw"], ROWS[0], strict=True))
    row[column] = value
    engine = sqlite_source(tmp_path, [ROWS[1], tuple(row.values())])
    with pytest.raises(DataError, match=f"table 't': column '{column}': source value '{value}'"):
        read(engine, arrow=True)


def test_a_column_that_changes_storage_class_between_batches_is_named(tmp_path):
    """ADBC fixes a batch's column type from that batch; a text value in a later batch of an
    integer column is the driver's mismatch, reported with the column's name."""
    rows = [(i, 1.0, None, None, None, None, None, i, None) for i in range(1, 5)]
    rows.append((5, 1.0, None, None, None, None, None, "yes", None))
    engine = sqlite_source(tmp_path, rows)
    with pytest.raises(DataError, match="table 't': column 'flag': the source holds values of another type"):
        read(engine, arrow=True, batch_size=2)


def test_wide_decimals_read_through_rows(tmp_path, monkeypatch):
    """A decimal wider than SQLite keeps exactly is stored as REAL or text; only the row path
    formats its floats as before, so such a table is read through rows."""
    engine = sqlite_source(
        tmp_path,
        [(1, "13580237.0000000019")],
        ddl="CREATE TABLE t (id INTEGER PRIMARY KEY, d NUMERIC(20,10))",
    )
    dialect = get_dialect("sqlite")
    with engine.connect() as conn:
        statement = sa.select(sa.Table("t", sa.MetaData(), autoload_with=conn))
        schema = {"id": pl.Int64(), "d": pl.Decimal(20, 10)}
        assert dialect.arrow_batches(conn, statement, schema=schema, table="t", batch_size=10) is None  # type: ignore[attr-defined]
        schema["d"] = pl.Decimal(15, 4)
        assert dialect.arrow_batches(conn, statement, schema=schema, table="t", batch_size=10) is not None  # type: ignore[attr-defined]


def test_a_column_null_throughout_the_first_batch_still_reads(tmp_path):
    """The driver would fix such a column as int64 and fail on the first text in a later batch."""
    rows = [(i, None, None, None, None, None, None, None, None) for i in range(1, 6)]
    rows.append((6, 2.5, "2026-03-01 08:00:11", "2026-01-12", "08:00:00", "late text", 2.0, 1, b"\x01"))
    engine = sqlite_source(tmp_path, rows)
    arrow = read(engine, arrow=True, batch_size=2)
    assert_frame_equal(arrow, read(engine, arrow=False, batch_size=2))
    assert arrow.row(5) == (
        6,
        Decimal("2.5000"),
        dt.datetime(2026, 3, 1, 8, 0, 11),
        dt.date(2026, 1, 12),
        dt.time(8),
        "late text",
        2.0,
        True,
        b"\x01",
    )


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "rows"])
def test_text_in_an_unbounded_numeric_column_is_named(tmp_path, arrow):
    """SQLite keeps any text in a NUMERIC column; carried as exact text (no precision declared),
    it would reach a text column of the cache unchecked, and later fail as a watermark."""
    rows = [(1, "12.5"), (2, "-1E+3"), (3, None), (4, "2026-03-01 08:00:01")]
    engine = sqlite_source(tmp_path, rows, ddl="CREATE TABLE t (id INTEGER PRIMARY KEY, n NUMERIC)")
    with engine.begin() as conn:  # stored as they come: affinity makes the numbers numbers
        assert conn.exec_driver_sql("SELECT typeof(n) FROM t ORDER BY id").scalars().all() == [
            "real", "integer", "null", "text"
        ]  # fmt: skip
    with pytest.raises(DataError, match=r"column 'n': source value '2026-03-01 08:00:01' is not a number"):
        read(engine, arrow=arrow)
