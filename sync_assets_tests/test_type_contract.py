"""The lossless type contract: edge values survive every source/cache pair we can run, and a
mapping that would lose data fails naming the column unless the catalog allows it."""

from __future__ import annotations

import decimal
import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from itertools import product
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from sync_assets.dialects import get_dialect
from sync_assets.types import ColumnType, Kind
from sync_assets_tests.helpers import failure_message, make_harness, sync_log_rows

KINDS = ["sqlite", "postgresql", "duckdb"]
PAIRS = list(product(KINDS, KINDS))
LONG_TEXT = "long text ✓ " * 100_000  # 1.2 million characters
D38 = "9999999999999999999999999999.9999999999"  # 38 digits, scale 10
INT38 = "99999999999999999999999999999999999999"
# SQLite turns NUMERIC text into a REAL and keeps 15 significant digits: its own limit as a source.
SQLITE_D38 = "99999.9999999999"
SQLITE_INT38 = "999999999999999"
# Python's default decimal context keeps 28 digits; comparisons here need all 38.
EXACT = decimal.Context(prec=100)


def edge_table(kind: str) -> sa.Table:
    columns = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("d38", sa.Numeric(38, 10)),
        sa.Column("int38", sa.Numeric(38, 0)),
        sa.Column("money", sa.Numeric(15, 4)),
        sa.Column("ratio", sa.Double),
        sa.Column("day", sa.Date),
        sa.Column("stamp", sa.DateTime),
        sa.Column("label", sa.UnicodeText),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    ]
    if kind != "sqlite":  # SQLite has no zoned timestamp or UUID type to read from
        columns.append(sa.Column("zoned", sa.DateTime(timezone=True)))
        columns.append(sa.Column("ref", sa.Uuid(as_uuid=False)))
    return sa.Table("edge", sa.MetaData(), *columns)


def edge_rows(kind: str) -> list[dict[str, Any]]:
    base = datetime(2026, 5, 1, 12, 0, 0)
    berlin = timezone(timedelta(hours=2))
    rows = [
        # maxima, positive
        dict(
            id=1,
            d38=Decimal(SQLITE_D38 if kind == "sqlite" else D38),
            int38=Decimal(SQLITE_INT38 if kind == "sqlite" else INT38),
            money=Decimal("99999999999.9999"),
            ratio=1.7976931348623157e308,
            day=date(9999, 12, 31),
            stamp=datetime(9999, 12, 31, 23, 59, 59, 999999),
            label="𝄞🚀 four bytes",
            zoned=datetime(2026, 3, 29, 3, 30, 0, 123456, tzinfo=berlin),
            ref="0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9",  # byte order matters: must come back as written
        ),
        # minima, negative, negative zero
        dict(
            id=2,
            d38=Decimal("-" + (SQLITE_D38 if kind == "sqlite" else D38)),
            int38=Decimal("-" + (SQLITE_INT38 if kind == "sqlite" else INT38)),
            money=Decimal("-99999999999.9999"),
            ratio=-0.0,
            day=date(1900, 1, 1),
            stamp=datetime(1900, 1, 1, 0, 0, 0, 1),
            label="",
            zoned=datetime(1900, 1, 1, 0, 0, 0, tzinfo=UTC),
            ref="ffffffff-0000-4000-8000-000000000001",
        ),
        # smallest steps
        dict(
            id=3,
            d38=Decimal("0.0000000001"),
            int38=Decimal(1),
            money=Decimal("0.0001"),
            ratio=5e-324,
            day=date(2000, 2, 29),
            stamp=datetime(2026, 5, 1, 0, 0, 0, 1),
            label=LONG_TEXT,
            zoned=datetime(2026, 5, 1, 0, 0, 0, 1, tzinfo=UTC),
            ref="00000000-0000-0000-0000-000000000000",
        ),
        # every nullable column NULL ('' vs NULL: row 2 holds '')
        dict(
            id=4,
            d38=None,
            int38=None,
            money=None,
            ratio=None,
            day=None,
            stamp=None,
            label=None,
            zoned=None,
            ref=None,
        ),
    ]
    for i, row in enumerate(rows):
        row["updated_at"] = base + timedelta(seconds=i, microseconds=i)
        if kind == "sqlite":
            row.pop("zoned")
            row.pop("ref")
    return rows


def create_edge_source(url: sa.URL, kind: str) -> None:
    table = edge_table(kind)
    engine = sa.create_engine(url)
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        if kind == "sqlite":
            # SQLAlchemy binds decimals to SQLite as floats; the driver stores exact text.
            names = [c.name for c in table.columns]
            rows = [
                tuple(str(v) if isinstance(v, Decimal) else v for v in map(r.get, names))
                for r in edge_rows(kind)
            ]
            insert = str(table.insert().compile(dialect=conn.dialect))
            conn.connection.driver_connection.executemany(insert, rows)
        else:
            conn.execute(table.insert(), edge_rows(kind))
    engine.dispose()


def canonical(name: str, value: Any) -> Any:
    """Driver values as comparable Python values (SQLite hands out text for dates and decimals)."""
    if value is None:
        return None
    if name in ("d38", "int38", "money"):
        # SQLite hands out a REAL for a NUMERIC of up to 15 digits: its shortest repr is the decimal.
        return Decimal(repr(value) if isinstance(value, float) else str(value)).normalize(EXACT)
    if name == "ratio":
        return (float(value), math.copysign(1.0, float(value)))
    if name == "day" and isinstance(value, str):
        return date.fromisoformat(value)
    if name in ("stamp", "updated_at", "zoned") and isinstance(value, str):
        value = datetime.fromisoformat(value)
    if name == "ref":
        return str(value).lower()  # drivers hand out uuid.UUID or text
    if name == "zoned":
        return value.astimezone(UTC)
    return value


def cache_values(url: sa.URL) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        result = conn.exec_driver_sql("SELECT * FROM edge ORDER BY id")
        rows = [dict(zip(result.keys(), row, strict=True)) for row in result]
    engine.dispose()
    return [{k: canonical(k, v) for k, v in row.items()} for row in rows]


def expected_in(kind: str, source_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the cache must hold: the source's values. SQLite stores a float whose value is integral
    as an integer (https://www.sqlite.org/datatype3.html), so the sign of a negative zero is the
    one thing a SQLite cache does not keep; the value compares equal."""
    if kind != "sqlite":
        return source_rows
    return [
        {**row, "ratio": row["ratio"] and (row["ratio"][0], 1.0 if row["ratio"][0] == 0 else row["ratio"][1])}
        for row in source_rows
    ]


@pytest.mark.parametrize(("source_kind", "cache_kind"), PAIRS, ids=[f"{s}-to-{c}" for s, c in PAIRS])
def test_edge_values_round_trip(tmp_path, monkeypatch, make_database, source_kind, cache_kind):
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    create_edge_source(source_url, source_kind)
    source_rows = cache_values(source_url)
    inputs = [{k: canonical(k, v) for k, v in row.items()} for row in edge_rows(source_kind)]
    assert source_rows == expected_in(source_kind, inputs)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{"name": "edge", "source_table": "edge", "primary_key": ["id"], "updated_at": "updated_at"}],
        defaults={"batch_size": 3},  # rows 1-3 and row 4 in separate batches
    )
    assert harness.sync("edge", "mass").success
    assert cache_values(cache_url) == expected_in(cache_kind, source_rows)

    # The same values through the incremental path (staging + upsert), after touching every row.
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE edge SET updated_at = :t"), {"t": datetime(2026, 5, 2)})
    engine.dispose()
    assert harness.sync("edge", "daily").success
    source_rows = cache_values(source_url)
    assert {row["updated_at"] for row in source_rows} == {datetime(2026, 5, 2)}
    assert cache_values(cache_url) == expected_in(cache_kind, source_rows)
    assert sync_log_rows(cache_url)[-1]["rows_updated"] == 4

    # Read again unchanged, every edge value compares equal to what the cache stores (issue 10).
    assert harness.sync("edge", "daily").success
    log = sync_log_rows(cache_url)[-1]
    assert (log["rows_read"], log["rows_updated"], log["rows_unchanged"]) == (4, 0, 4)


def duckdb_nanosecond_source(url: sa.URL) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        # `at` is a DuckDB keyword: every statement sync_assets sends must quote it.
        conn.exec_driver_sql('CREATE TABLE events (id INTEGER PRIMARY KEY, "at" TIMESTAMP_NS NOT NULL)')
        conn.exec_driver_sql(
            "INSERT INTO events VALUES (1, TIMESTAMP_NS '2026-05-01 12:00:00.123456789'), "
            "(2, TIMESTAMP_NS '1900-01-01 00:00:00.000000001')"
        )
    engine.dispose()


def test_nanoseconds_are_kept_where_the_cache_holds_them(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("duckdb"), make_database("duckdb")
    duckdb_nanosecond_source(source_url)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{"name": "events", "source_table": "events", "primary_key": ["id"], "updated_at": "at"}],
    )
    assert harness.sync("events", "mass").success
    engine = sa.create_engine(cache_url)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql(
            'SELECT CAST("at" AS VARCHAR), typeof("at") FROM events ORDER BY id'
        ).all()
    engine.dispose()
    assert stored == [
        ("2026-05-01 12:00:00.123456789", "TIMESTAMP_NS"),
        ("1900-01-01 00:00:00.000000001", "TIMESTAMP_NS"),
    ]


@pytest.mark.parametrize("cache_kind", ["postgresql", "sqlite"])
def test_nanoseconds_into_a_microsecond_cache_fail_unless_allowed(
    tmp_path, monkeypatch, make_database, cache_kind
):
    source_url, cache_url = make_database("duckdb"), make_database(cache_kind)
    duckdb_nanosecond_source(source_url)
    table = {"name": "events", "source_table": "events", "primary_key": ["id"], "updated_at": "at"}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[table])
    result = harness.sync("events", "mass")
    assert not result.success
    message = failure_message(result)
    assert "column 'at' (datetime(9)) would lose data in the cache" in message
    assert "9 fractional second digits" in message and "allow_lossy" in message
    assert not sa.inspect(sa.create_engine(cache_url)).has_table("events")

    allowed = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**table, "allow_lossy": ["at"]}],
    )
    assert allowed.sync("events", "mass").success
    engine = sa.create_engine(cache_url)
    with engine.connect() as conn:
        stored = [
            canonical("stamp", v) for (v,) in conn.exec_driver_sql('SELECT "at" FROM events ORDER BY id')
        ]
    engine.dispose()
    # Truncated to the cache's microseconds, as allowed; never rounded up into another second.
    assert stored == [datetime(2026, 5, 1, 12, 0, 0, 123456), datetime(1900, 1, 1)]
    assert sync_log_rows(cache_url, "events")[-1]["status"] == "succeeded"


def test_unbounded_numeric_into_duckdb_fails_naming_the_column(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("postgresql"), make_database("duckdb")
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE amounts (id integer PRIMARY KEY, total numeric)")
        conn.exec_driver_sql("INSERT INTO amounts VALUES (1, 12345678901234567890.123456789)")
    engine.dispose()
    table = {"name": "amounts", "source_table": "amounts", "primary_key": ["id"]}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[table])
    result = harness.sync("amounts", "mass")
    assert not result.success
    assert (
        "table 'amounts': column 'total' (unbounded decimal) would lose data in the cache: "
        "unbounded decimal needs more than the 38 digits a duckdb DECIMAL keeps"
    ) in failure_message(result)


@pytest.mark.parametrize(
    ("cache", "column_type", "loss"),
    [
        ("postgresql", ColumnType(Kind.DECIMAL), None),
        ("postgresql", ColumnType(Kind.DECIMAL, precision=60, scale=20), None),
        (
            "postgresql",
            ColumnType(Kind.DATETIME, precision=9),
            "9 fractional second digits, the postgresql cache keeps 6",
        ),
        ("postgresql", ColumnType(Kind.DATETIME, precision=6, timezone=True), None),
        ("sqlite", ColumnType(Kind.DECIMAL), None),
        (
            "sqlite",
            ColumnType(Kind.DATETIME, precision=7),
            "7 fractional second digits, the sqlite cache keeps 6",
        ),
        ("duckdb", ColumnType(Kind.DECIMAL, precision=38, scale=10), None),
        (
            "duckdb",
            ColumnType(Kind.DECIMAL, precision=39, scale=0),
            "decimal(39,0) needs more than the 38 digits a duckdb DECIMAL keeps",
        ),
        ("duckdb", ColumnType(Kind.DATETIME, precision=9), None),
        (
            "duckdb",
            ColumnType(Kind.DATETIME, precision=9, timezone=True),
            "9 fractional second digits, the duckdb cache keeps 6",
        ),
        (
            "duckdb",
            ColumnType(Kind.TIME, precision=9),
            "9 fractional second digits, the duckdb cache keeps 6",
        ),
    ],
)
def test_each_cache_states_what_it_cannot_hold(cache, column_type, loss):
    assert get_dialect(cache).loss(column_type) == loss


def test_allowed_lossy_timestamps_are_truncated_never_rounded_up():
    """DuckDB rounds nanoseconds into a TIMESTAMPTZ or TIME (23:59:59.999999999 became 24:00:00);
    the batch is truncated to the cache's digits first, so every cache keeps the same value."""
    from sync_assets.catalog.models import TableSpec
    from sync_assets.sources.sql import SourceColumn, SqlTable
    from sync_assets.sync.target import cache_value_fixes

    spec = TableSpec(name="t", source="s", source_table="t", primary_key=["id"], allow_lossy=["*"])
    columns = [
        SourceColumn("id", "id", ColumnType(Kind.INTEGER, bits=64), sa.column("id")),
        SourceColumn("at", "at", ColumnType(Kind.DATETIME, precision=9, timezone=True), sa.column("at")),
        SourceColumn("clock", "clock", ColumnType(Kind.TIME, precision=9), sa.column("clock")),
        SourceColumn("local", "local", ColumnType(Kind.DATETIME, precision=9), sa.column("local")),
    ]
    last = datetime(2026, 5, 1, 23, 59, 59)
    last_ns = int(last.replace(tzinfo=UTC).timestamp()) * 10**9
    frame = pl.DataFrame(
        {
            "id": [1],
            "at": pl.Series([last_ns + 999_999_999]).cast(pl.Datetime("ns", "UTC")),
            "clock": pl.Series([86_399_999_999_999]).cast(pl.Time),
            "local": pl.Series([last_ns + 123_456_789]).cast(pl.Datetime("ns")),
        }
    )
    duckdb_cut = frame.with_columns(cache_value_fixes(SqlTable(spec, columns), get_dialect("duckdb")))
    assert duckdb_cut.row(0) == (
        1,
        datetime(2026, 5, 1, 23, 59, 59, 999999, tzinfo=UTC),
        time(23, 59, 59, 999999),
        frame["local"][0],  # TIMESTAMP_NS keeps all 9 digits
    )
    mssql_cut = frame.with_columns(cache_value_fixes(SqlTable(spec, columns), get_dialect("mssql")))
    assert mssql_cut["local"].cast(pl.Int64)[0] % 100 == 0  # 7 digits: whole 100 ns
    assert mssql_cut["local"].cast(pl.Int64)[0] % 1_000_000_000 == 123_456_700


def test_uuids_reach_the_cache_in_canonical_lower_case():
    """SQL Server hands out UNIQUEIDENTIFIER text in upper case; a text cache gets the canonical form."""
    from sync_assets.catalog.models import TableSpec
    from sync_assets.sources.sql import SourceColumn, SqlTable
    from sync_assets.sync.target import cache_value_fixes

    spec = TableSpec(name="t", source="s", source_table="t", primary_key=["ref"])
    columns = [SourceColumn("ref", "ref", ColumnType(Kind.UUID), sa.column("ref"))]
    frame = pl.DataFrame({"ref": ["0A1B2C3D-4E5F-4071-8293-A4B5C6D7E8F9", None]})
    fixed = frame.with_columns(cache_value_fixes(SqlTable(spec, columns), get_dialect("sqlite")))
    assert fixed["ref"].to_list() == ["0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9", None]


@pytest.mark.parametrize("cache", ["sqlite", "postgresql", "duckdb", "mssql"])
def test_a_uuid_column_cached_as_text_still_fits(cache):
    """Caches made before UUIDs had their own kind hold them as VARCHAR(36): no drift error."""
    dialect = get_dialect(cache)
    assert dialect.type_family(sa.String(36)) == dialect.type_family(
        dialect.column_type(ColumnType(Kind.UUID))
    )
