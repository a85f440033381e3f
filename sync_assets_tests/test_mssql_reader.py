"""mssql-python's Arrow reader gives the batch schema's exact values, without a server: the batches
are built as the driver builds them (mssql-python 1.16's Arrow types), the SQL is compiled with
its SQLAlchemy dialect, and a small stand-in DB-API connection records what the reader does with
it. With SYNC_TEST_MSSQL_URL set, the same edge values are read from a real server."""

from __future__ import annotations

import datetime as dt
import gc
import os
import re
import socket
import uuid
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal
from sqlalchemy.dialects import mssql

from sync_assets.batches import typed_batch
from sync_assets.catalog.models import TableSpec
from sync_assets.dialects import get_dialect, mssql_reader
from sync_assets.dialects.base import Timeouts
from sync_assets.errors import DataError
from sync_assets.sources.sql import SourceColumn, SqlSource, SqlTable

DIALECT = get_dialect("mssql")
URL = sa.make_url("mssql+mssqlpython://sync@db.example:1433/erp?TrustServerCertificate=yes")
UTC = dt.UTC
BIG_TEXT = "a😀" * 600_000  # 1.2 million characters, half of them beyond the BMP
MAX_DECIMAL = Decimal("9999999999999999999999999999.9999999999")
MIN_DECIMAL = Decimal(
    "-9999999999999999999999999999.9999999999"
)  # not -MAX_DECIMAL: that rounds to 28 digits
END_OF_TIME = dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
GUID = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"

# One column of each type, as SQLAlchemy reflects it from SQL Server.
COLUMNS: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("id", mssql.BIGINT()),
    ("dec", mssql.DECIMAL(38, 10)),
    ("whole", mssql.DECIMAL(38, 0)),
    ("amount", mssql.MONEY()),
    ("tiny", mssql.TINYINT()),
    ("small", mssql.SMALLINT()),
    ("int", mssql.INTEGER()),
    ("real", mssql.REAL()),
    ("float", mssql.FLOAT(53)),
    ("flag", mssql.BIT()),
    ("day", mssql.DATE()),
    ("at", mssql.DATETIME2(7)),
    ("legacy", mssql.DATETIME()),
    ("zoned", mssql.DATETIMEOFFSET(7)),
    ("clock", mssql.TIME(7)),
    ("guid", mssql.UNIQUEIDENTIFIER()),
    ("name", mssql.NVARCHAR(100)),
    ("note", mssql.NVARCHAR(None)),
    ("raw", mssql.VARBINARY(None)),
]
REFLECTED = sa.Table("Edge", sa.MetaData(), *[sa.Column(n, t) for n, t in COLUMNS], schema="dbo")


def edge_source(**spec: Any) -> SqlTable:
    """The SqlTable `reflect()` builds for REFLECTED: types mapped, the UUID under its text cast."""
    table = TableSpec(
        name="edge", source="erp", source_table="Edge", source_schema="dbo", primary_key=["id"], **spec
    )
    columns = []
    for col in REFLECTED.columns:
        ct = DIALECT.source_type(col.type, table="edge", column=col.name)
        columns.append(SourceColumn(col.name, col.name, ct, DIALECT.source_expression(col, ct)))  # type: ignore[attr-defined]
    return SqlTable(table, columns)


SCHEMA = edge_source().schema()
assert SCHEMA is not None


def driver_batch() -> pa.RecordBatch:
    """Three rows as mssql-python 1.16 hands them over: its own Arrow type for each SQL type
    (MONEY arrives through the reader's DECIMAL(19, 4) cast)."""
    arrays = {
        "id": pa.array([1, 2, 3], pa.int64()),
        "dec": pa.array([MAX_DECIMAL, MIN_DECIMAL, None], pa.decimal128(38, 10)),
        "whole": pa.array([Decimal("9" * 38), Decimal("-" + "9" * 38), Decimal(0)], pa.decimal128(38, 0)),
        "amount": pa.array(
            [Decimal("922337203685477.5807"), Decimal("-922337203685477.5808"), None], pa.decimal128(19, 4)
        ),
        "tiny": pa.array([255, 0, None], pa.uint8()),
        "small": pa.array([-(2**15), 2**15 - 1, None], pa.int16()),
        "int": pa.array([-(2**31), 2**31 - 1, None], pa.int32()),
        "real": pa.array([0.1, -0.0, None], pa.float32()),
        "float": pa.array([1e308, -0.0, None], pa.float64()),
        "flag": pa.array([True, False, None], pa.bool_()),
        "day": pa.array([dt.date(9999, 12, 31), dt.date(1, 1, 1), None], pa.date32()),
        "at": pa.array([END_OF_TIME, dt.datetime(1900, 1, 1), None], pa.timestamp("us")),
        "legacy": pa.array(
            [dt.datetime(1753, 1, 1), dt.datetime(2026, 3, 1, 8, 0, 0, 3333), None], pa.timestamp("us")
        ),
        "zoned": pa.array(
            [
                dt.datetime(2026, 6, 1, 10, 0, 0, 123456, tzinfo=UTC),
                dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                None,
            ],
            pa.timestamp("us", tz="+00:00"),
        ),
        "clock": pa.array([86_399_999_999_900, 0, None], pa.time64("ns")),  # 23:59:59.9999999
        "guid": pa.array([GUID, None, GUID.lower()], pa.large_string()),
        "name": pa.array(["😀𝄞 ünï", "", None], pa.large_string()),
        "note": pa.array([BIG_TEXT, "", None], pa.large_string()),
        "raw": pa.array([b"\x00\xff", b"", None], pa.large_binary()),
    }
    return pa.RecordBatch.from_pydict(arrays)


EXPECTED = pl.DataFrame(
    {
        "id": [1, 2, 3],
        "dec": [MAX_DECIMAL, MIN_DECIMAL, None],
        "whole": [Decimal("9" * 38), Decimal("-" + "9" * 38), Decimal(0)],
        "amount": [Decimal("922337203685477.5807"), Decimal("-922337203685477.5808"), None],
        "tiny": [255, 0, None],
        "small": [-(2**15), 2**15 - 1, None],
        "int": [-(2**31), 2**31 - 1, None],
        "real": [float(pa.scalar(0.1, pa.float32()).as_py()), -0.0, None],
        "float": [1e308, -0.0, None],
        "flag": [True, False, None],
        "day": [dt.date(9999, 12, 31), dt.date(1, 1, 1), None],
        "at": [END_OF_TIME, dt.datetime(1900, 1, 1), None],
        "legacy": [dt.datetime(1753, 1, 1), dt.datetime(2026, 3, 1, 8, 0, 0, 3333), None],
        "zoned": [
            dt.datetime(2026, 6, 1, 10, 0, 0, 123456, tzinfo=UTC),
            END_OF_TIME.replace(tzinfo=UTC),
            None,
        ],
        "clock": [dt.time(23, 59, 59, 999999), dt.time(0), None],
        "guid": [GUID.lower(), None, GUID.lower()],
        "name": ["😀𝄞 ünï", "", None],
        "note": [BIG_TEXT, "", None],
        "raw": [b"\x00\xff", b"", None],
    },
    schema=SCHEMA,
)


def test_the_batch_schema_is_what_the_sync_expects_of_sql_server():
    assert edge_source().schema() == {
        "id": pl.Int64(),
        "dec": pl.Decimal(38, 10),
        "whole": pl.Decimal(38, 0),
        "amount": pl.Decimal(19, 4),
        "tiny": pl.Int16(),
        "small": pl.Int16(),
        "int": pl.Int32(),
        "real": pl.Float64(),
        "float": pl.Float64(),
        "flag": pl.Boolean(),
        "day": pl.Date(),
        "at": pl.Datetime("us"),
        "legacy": pl.Datetime("us"),
        "zoned": pl.Datetime("us", "UTC"),
        "clock": pl.Time(),
        "guid": pl.String(),
        "name": pl.String(),
        "note": pl.String(),
        "raw": pl.Binary(),
    }


def test_each_arrow_type_of_the_driver_is_cast_exactly_to_the_schema():
    frame = typed_batch(pl.from_arrow(driver_batch()), SCHEMA, uuids={"guid"}, table="edge")  # type: ignore[arg-type]
    assert_frame_equal(frame, EXPECTED)
    assert frame.schema == SCHEMA
    # Exact digits, never through a float; the zoned value is the UTC instant.
    assert frame.get_column("dec").to_list()[:2] == [MAX_DECIMAL, MIN_DECIMAL]
    assert str(frame.get_column("whole")[0]) == "9" * 38
    assert frame.get_column("zoned")[0] == dt.datetime(
        2026, 6, 1, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2))
    )
    # '' and NULL stay apart; 4-byte characters and 1.2 million of them arrive whole.
    assert frame.get_column("name").to_list() == ["😀𝄞 ünï", "", None]
    assert len(frame.get_column("note")[0]) == 1_200_000
    assert frame.get_column("tiny")[0] == 255


def test_zoned_values_take_the_schemas_zone_and_unit():
    frame = pl.from_arrow(driver_batch()).select("zoned")
    schema = {"zoned": pl.Datetime("ms", "Europe/Berlin")}
    cast = typed_batch(frame, schema, uuids=(), table="edge")  # type: ignore[arg-type]
    assert cast.get_column("zoned")[0] == dt.datetime(2026, 6, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert cast.schema == schema


@pytest.mark.parametrize(
    ("column", "dtype", "shown"),
    [
        ("tiny", pl.Int8(), "255"),
        ("at", pl.Datetime("ns"), "datetime.datetime(9999, 12, 31, 23, 59, 59, 999999)"),
        ("dec", pl.Decimal(38, 11), "Decimal('9999999999999999999999999999.9999999999')"),
    ],
)
def test_a_value_that_does_not_fit_names_table_column_and_value(column, dtype, shown):
    frame = pl.from_arrow(driver_batch()).select(column)
    with pytest.raises(
        DataError, match=re.escape(f"table 'edge': column '{column}': source value {shown} cannot be read as")
    ):
        typed_batch(frame, {column: dtype}, uuids=(), table="edge")  # type: ignore[arg-type]


def test_the_sql_sent_for_an_incremental_window():
    """Bounds as bound parameters in the driver's pyformat; the UUID read as itself (the row path's
    NVARCHAR(max) cast would make the driver fetch one row at a time), MONEY as DECIMAL(19, 4)."""
    source = edge_source(updated_at="at")
    statement = source.select(low=dt.datetime(2026, 3, 1), high=dt.datetime(2026, 3, 2, 8))
    read = mssql_reader.read_statement(statement, SCHEMA)
    assert read is not None
    query, uuids = read
    compiled = query.compile(
        dialect=sa.create_engine(URL).dialect, compile_kwargs={"render_postcompile": True}
    )
    assert compiled.string == (
        "SELECT dbo.[Edge].id AS id, dbo.[Edge].dec AS dec, dbo.[Edge].whole AS whole, "
        "CAST(dbo.[Edge].amount AS DECIMAL(19, 4)) AS amount, dbo.[Edge].tiny AS tiny, "
        "dbo.[Edge].small AS small, dbo.[Edge].int AS int, dbo.[Edge].real AS real, "
        "dbo.[Edge].float AS float, dbo.[Edge].flag AS flag, dbo.[Edge].day AS day, "
        "dbo.[Edge].at AS at, dbo.[Edge].legacy AS legacy, dbo.[Edge].zoned AS zoned, "
        "dbo.[Edge].clock AS clock, dbo.[Edge].guid AS guid, dbo.[Edge].name AS name, "
        "dbo.[Edge].note AS note, dbo.[Edge].raw AS raw \n"
        "FROM dbo.[Edge] \n"
        "WHERE dbo.[Edge].at >= %(at_1)s AND dbo.[Edge].at <= %(at_2)s"
    )
    assert compiled.construct_params() == {
        "at_1": dt.datetime(2026, 3, 1),
        "at_2": dt.datetime(2026, 3, 2, 8),
    }
    assert uuids == {"guid"}
    # A hash incremental's keys: one bound parameter per value.
    keys = mssql_reader.read_statement(source.select(keys=[(7,), (9,)]), SCHEMA)
    assert keys is not None
    by_keys = keys[0].compile(dialect=compiled.dialect, compile_kwargs={"render_postcompile": True})
    assert by_keys.string.endswith("WHERE dbo.[Edge].id IN (%(id_1_1)s, %(id_1_2)s)")
    assert by_keys.construct_params() == {"id_1_1": 7, "id_1_2": 9}
    # The row path's statement is left as it was.
    assert "CAST(dbo.[Edge].guid AS NVARCHAR(max))" in str(statement.compile(dialect=mssql.dialect()))


def test_legacy_lob_types_are_read_as_the_types_they_convert_to():
    table = sa.Table(
        "Old",
        sa.MetaData(),
        sa.Column("t", mssql.TEXT()),
        sa.Column("n", mssql.NTEXT()),
        sa.Column("i", mssql.IMAGE()),
    )
    statement = sa.select(*[c.label(c.name) for c in table.columns])
    read = mssql_reader.read_statement(statement, {"t": pl.String(), "n": pl.String(), "i": pl.Binary()})
    assert read is not None
    assert str(read[0].compile(dialect=mssql.dialect())) == (
        "SELECT CAST([Old].t AS VARCHAR(max)) AS t, CAST([Old].n AS NVARCHAR(max)) AS n, "
        "CAST([Old].i AS VARBINARY(max)) AS i \nFROM [Old]"
    )


@pytest.mark.parametrize(
    ("type_", "dtype"),
    [
        (mssql.SQL_VARIANT(), pl.String()),  # the driver's Arrow fetch refuses it
        (sa.types.NullType(), pl.Int64()),  # a query source's column: its SQL type is unknown
        (mssql.FLOAT(53), pl.Decimal(38, 10)),  # a float is never made a decimal
        (mssql.DECIMAL(38, 10), pl.String()),
        (mssql.DATETIME2(7), pl.Datetime("us", "UTC")),  # a naive timestamp has no instant
    ],
)
def test_a_column_the_driver_would_not_deliver_exactly_goes_through_rows(type_, dtype):
    table = sa.Table("t", sa.MetaData(), sa.Column("id", mssql.BIGINT()), sa.Column("c", type_))
    statement = sa.select(table.c.id.label("id"), table.c.c.label("c"))
    assert mssql_reader.read_statement(statement, {"id": pl.Int64(), "c": dtype}) is None


def test_pyodbc_connections_keep_the_row_path(tmp_path):
    """Any driver but mssql-python (here sqlite3 stands for pyodbc: no server needed) reads rows."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with engine.connect() as conn:
        assert not mssql_reader.uses_driver(conn)
        statement = sa.select(sa.literal(1).label("id"))
        assert (
            DIALECT.arrow_batches(conn, statement, schema={"id": pl.Int64()}, table="t", batch_size=10)
            is None
        )  # type: ignore[attr-defined]
    engine.dispose()


class FakeConnection:
    """A DB-API connection of mssql-python's shape that records what the reader calls."""

    def __init__(self, batches: list[pa.RecordBatch]) -> None:
        self.batches, self.calls = batches, []

    def cursor(self) -> FakeConnection:
        self.calls.append("cursor")
        return self

    def execute(self, query: str, parameters: dict[str, Any]) -> None:
        self.calls.append(("execute", query, parameters))

    def arrow_reader(self, batch_size: int) -> FakeReader:
        self.calls.append(("arrow_reader", batch_size))
        return FakeReader(self)

    def close(self) -> None:
        self.calls.append("close")


class FakeReader:
    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection

    def __iter__(self) -> Any:
        return iter(self.connection.batches)

    def close(self) -> None:  # mssql-python cancels the statement here
        self.connection.calls.append("reader.close")


def fake_batches(connection: FakeConnection) -> Any:
    return mssql_reader.batches(
        lambda: connection, "SELECT 1", {"p": 1}, schema=SCHEMA, uuids={"guid"}, table="edge", batch_size=2
    )


def test_the_reader_opens_its_connection_on_the_first_batch_and_closes_it_at_the_end():
    connection = FakeConnection([driver_batch(), driver_batch().slice(0, 0), driver_batch().slice(2)])
    frames = fake_batches(connection)
    assert connection.calls == []
    assert [f.height for f in frames] == [3, 1]  # the empty batch is dropped
    assert connection.calls == [
        "cursor",
        ("execute", "SELECT 1", {"p": 1}),
        ("arrow_reader", 2),
        "reader.close",
        "close",  # the cursor
        "close",  # the connection
    ]


def test_the_reader_closes_its_connection_when_closed_early_or_collected():
    connection = FakeConnection([driver_batch(), driver_batch()])
    frames = fake_batches(connection)
    assert_frame_equal(next(frames), EXPECTED)
    frames.close()
    assert connection.calls[-3:] == ["reader.close", "close", "close"]

    connection = FakeConnection([driver_batch(), driver_batch()])
    frames = fake_batches(connection)
    next(frames)
    del frames
    gc.collect()
    assert connection.calls[-3:] == ["reader.close", "close", "close"]


def test_a_value_that_does_not_fit_fails_the_batch_and_closes_the_connection():
    fits = driver_batch().slice(1)  # tiny: 0, NULL
    connection = FakeConnection([fits, driver_batch()])  # then 255
    schema = {**SCHEMA, "tiny": pl.Int8()}
    frames = mssql_reader.batches(
        lambda: connection, "SELECT 1", {}, schema=schema, uuids=(), table="edge", batch_size=2
    )
    assert next(frames).get_column("tiny").to_list() == [0, None]
    with pytest.raises(
        DataError, match="table 'edge': column 'tiny': source value 255 cannot be read as Int8"
    ):
        next(frames)
    assert connection.calls[-3:] == ["reader.close", "close", "close"]


def test_the_engine_options_reach_mssql_python():
    """mssql-python sets APP itself and refuses it; its keep-alive and login timeout are taken.
    Against a closed port, the real driver fails to connect (it does not refuse the options)."""
    timeouts = Timeouts(connect=2.5, keepalive=45)
    options = DIALECT.engine_options(URL, role="source", timeouts=timeouts)
    assert options == {"connect_args": {"timeout": 3, "KeepAlive": 45, "KeepAliveInterval": 1}}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = URL.set(host="127.0.0.1", port=port)
    engine = sa.create_engine(closed, **DIALECT.engine_options(closed, role="source", timeouts=timeouts))
    with pytest.raises(sa.exc.DBAPIError) as failed:
        engine.connect()
    assert type(failed.value.orig).__module__.startswith("mssql_python")
    engine.dispose()


# -- against a real server ------------------------------------------------------------------------

SERVER = os.environ.get("SYNC_TEST_MSSQL_URL")


def mssql_python_url(url: str) -> sa.URL:
    """The server of SYNC_TEST_MSSQL_URL (often a pyodbc URL) through mssql-python."""
    return sa.make_url(url).set(drivername="mssql+mssqlpython").difference_update_query(["driver"])


@pytest.mark.skipif(
    not SERVER, reason="SYNC_TEST_MSSQL_URL not set: the read from a real SQL Server is skipped"
)
def test_edge_values_read_from_a_real_server_through_the_arrow_reader(monkeypatch):
    url = mssql_python_url(SERVER or "")
    name = f"edge_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url, **DIALECT.engine_options(url, role="source", timeouts=Timeouts(10, 30)))
    table = sa.Table(
        name,
        sa.MetaData(),
        *[sa.Column(n, t, primary_key=n == "id", autoincrement=False) for n, t in COLUMNS],
    )

    def server_value(column: str, text: str) -> sa.ColumnElement[Any]:
        """A value the server converts from its text: exact whatever the driver binds."""
        return sa.cast(sa.literal(text, mssql.NVARCHAR()), table.c[column].type)

    rows = [
        {
            "id": 1,
            "dec": server_value("dec", str(MAX_DECIMAL)),
            "whole": server_value("whole", "9" * 38),
            "amount": server_value("amount", "922337203685477.5807"),
            "tiny": 255,
            "small": -(2**15),
            "int": -(2**31),
            "real": server_value("real", "0.1"),
            "float": server_value("float", "1e308"),
            "flag": True,
            "day": server_value("day", "9999-12-31"),
            "at": server_value("at", "9999-12-31 23:59:59.9999999"),
            "legacy": server_value("legacy", "1753-01-01 00:00:00"),
            "zoned": server_value("zoned", "2026-06-01 12:00:00.1234567 +02:00"),
            "clock": server_value("clock", "23:59:59.9999999"),
            "guid": server_value("guid", GUID),
            "name": "😀𝄞 ünï",
            "note": sa.func.replicate(
                sa.cast(sa.literal("a😀", mssql.NVARCHAR()), mssql.NVARCHAR(None)), 600_000
            ),
            "raw": b"\x00\xff",
        },
        {"id": 2, "name": "", "note": "", "raw": b""},
        {"id": 3},
    ]
    try:
        with engine.begin() as conn:
            table.create(conn)
            for row in rows:
                conn.execute(sa.insert(table).values(**row))
        import sync_assets.sources.sql as sql_module

        monkeypatch.setattr(sql_module, "read_batches", lambda *a, **k: pytest.fail("rows were read"))
        spec = TableSpec(name="edge", source="erp", source_table=name, primary_key=["id"])
        with engine.connect() as conn:
            source = SqlSource.open(conn, DIALECT, spec, batch_size=2, log=print)  # type: ignore[arg-type]
            frame = pl.concat(list(source.batches(None))).sort("id")
    finally:
        with engine.begin() as conn:
            table.drop(conn, checkfirst=True)
        engine.dispose()
    expected = pl.DataFrame(
        {
            "id": [1, 2, 3],
            "dec": [MAX_DECIMAL, None, None],
            "whole": [Decimal("9" * 38), None, None],
            "amount": [Decimal("922337203685477.5807"), None, None],
            "tiny": [255, None, None],
            "small": [-(2**15), None, None],
            "int": [-(2**31), None, None],
            "real": [float(pa.scalar(0.1, pa.float32()).as_py()), None, None],
            "float": [1e308, None, None],
            "flag": [True, None, None],
            "day": [dt.date(9999, 12, 31), None, None],
            "at": [END_OF_TIME, None, None],  # the seventh digit is not read
            "legacy": [dt.datetime(1753, 1, 1), None, None],
            "zoned": [dt.datetime(2026, 6, 1, 10, 0, 0, 123456, tzinfo=UTC), None, None],
            "clock": [dt.time(23, 59, 59, 999999), None, None],
            "guid": [GUID.lower(), None, None],
            "name": ["😀𝄞 ünï", "", None],
            "note": [BIG_TEXT, "", None],
            "raw": [b"\x00\xff", b"", None],
        },
        schema=SCHEMA,
    )
    assert_frame_equal(frame, expected)
