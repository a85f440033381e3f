"""SQL Server loads through mssql-python's TDS bulk copy, without a server: the exact SQL of
the fresh heap, the commit and an incremental's MERGE from the heap, the Arrow batches handed to the driver (every cache type paired
as its bulk writer accepts, the type contract's edge values intact), and the driver's own
`Cursor.bulkcopy_arrow` up to the point where it would open its connection.

The bulk copy itself runs in `integration/test_mssql.py` when SYNC_TEST_MSSQL_URL is set.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import mssql_py_core
import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy as sa
from mssql_python.cursor import Cursor
from sqlalchemy.dialects import mssql

from sync_assets.dialects import mssql_bulk, mssql_reader
from sync_assets.dialects.mssql import DIALECT, upsert_statements
from sync_assets.types import ColumnType, Kind


def server() -> sa.Dialect:
    """SQL Server 2022 as SQLAlchemy sees it once connected (DATE, NVARCHAR(max))."""
    dialect = mssql.dialect()
    dialect.server_version_info = (16, 0)
    dialect._setup_version_attributes()
    return dialect


def sql(statement: Any) -> str:
    return str(statement.compile(dialect=server())).strip()


def target() -> sa.Table:
    return sa.Table(
        "Order",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, nullable=False),
        sa.Column("name", mssql.NVARCHAR(80)),
        sa.Column("updated_at", mssql.DATETIME2(7)),
        sa.Index("ix_order_updated_at", "updated_at"),
        schema="erp",
    )


def test_the_fresh_table_is_a_nullable_heap_in_the_target_schema():
    fresh = DIALECT.fresh_copy(target(), keyed=False)
    assert sql(sa.schema.CreateTable(fresh)) == (
        "CREATE TABLE erp.[Order__sync_new] (\n"
        "\tid BIGINT NULL, \n"
        "\tname NVARCHAR(80) NULL, \n"
        "\tupdated_at DATETIME2(7) NULL\n"
        ")"
    )
    long = sa.Table("t" * 128, sa.MetaData(), sa.Column("id", sa.Integer))
    assert len(DIALECT.fresh_copy(long, keyed=False).name) == 128


def test_the_commit_replaces_the_rows_under_table_locks_and_drops_the_heap():
    table = target()
    statements = [sql(s) for s in DIALECT.replace_from(table, DIALECT.fresh_copy(table, keyed=False))]
    assert statements == [
        "DELETE FROM erp.[Order] WITH (TABLOCKX)",
        "INSERT INTO erp.[Order] WITH (TABLOCK) (id, name, updated_at) "
        "SELECT erp.[Order__sync_new].id, erp.[Order__sync_new].name, erp.[Order__sync_new].updated_at \n"
        "FROM erp.[Order__sync_new]",
        "DROP TABLE erp.[Order__sync_new]",
    ]


def test_an_incremental_merges_from_the_heap_and_its_clean_up_drops_it():
    table = target()
    heap = DIALECT.fresh_copy(table, keyed=False)
    _changes, merge = upsert_statements(table, heap, key=["id"], updated_at="updated_at")
    assert sql(merge) == (
        "MERGE INTO erp.[Order] WITH (HOLDLOCK)\n"
        "USING (SELECT ranked.id AS id, ranked.name AS name, ranked.updated_at AS updated_at \n"
        "FROM (SELECT erp.[Order__sync_new].id AS id, erp.[Order__sync_new].name AS name, "
        "erp.[Order__sync_new].updated_at AS updated_at, row_number() OVER (PARTITION BY "
        "erp.[Order__sync_new].id ORDER BY erp.[Order__sync_new].updated_at DESC) AS _sync_rank \n"
        "FROM erp.[Order__sync_new]) AS ranked \n"
        "WHERE ranked._sync_rank = :sync_rank_1) AS latest\n"
        "ON erp.[Order].id = latest.id\n"
        "WHEN MATCHED AND (NOT EXISTS (SELECT datalength(erp.[Order].name) INTERSECT SELECT "
        "datalength(latest.name)) OR NOT EXISTS (SELECT CAST(erp.[Order].name AS VARBINARY(max)) "
        "INTERSECT SELECT CAST(latest.name AS VARBINARY(max))) OR NOT EXISTS (SELECT "
        "erp.[Order].updated_at INTERSECT SELECT latest.updated_at)) "
        "THEN UPDATE SET name = latest.name, updated_at = latest.updated_at\n"
        "WHEN NOT MATCHED BY TARGET THEN INSERT (id, name, updated_at) "
        "VALUES (latest.id, latest.name, latest.updated_at);"
    )
    assert sql(sa.schema.DropTable(heap)) == "DROP TABLE erp.[Order__sync_new]"


# What mssql-py-core's Arrow bulk writer pairs with each destination type (resolve_kind in
# mssql-py-core/src/arrow_bulkcopy.rs); any other pair is refused by the server-side load.
ACCEPTED = {
    "BIGINT": pa.types.is_integer,
    "INTEGER": pa.types.is_integer,
    "SMALLINT": pa.types.is_integer,
    "FLOAT": pa.types.is_floating,
    "BIT": pa.types.is_boolean,
    "DATE": pa.types.is_date,
    "DATETIME2": lambda t: pa.types.is_timestamp(t) and t.tz is None,
    "DATETIMEOFFSET": lambda t: pa.types.is_timestamp(t) and t.tz is not None,
    "TIME": pa.types.is_time,
    "UNIQUEIDENTIFIER": lambda t: pa.types.is_large_string(t) or pa.types.is_string(t),
    "NVARCHAR": pa.types.is_large_string,
    "VARBINARY": pa.types.is_large_binary,
    "DECIMAL": pa.types.is_decimal128,
}


def accepted(ddl: str, arrow: pa.DataType) -> bool:
    """Whether the writer takes `arrow` into a column declared `ddl` (a decimal: the same digits)."""
    accepts = ACCEPTED[ddl.split("(")[0]](arrow)
    if ddl.startswith("DECIMAL"):
        return accepts and ddl == f"DECIMAL({arrow.precision}, {arrow.scale})"
    return accepts


@pytest.mark.parametrize(
    "ct",
    [
        ColumnType(Kind.INTEGER, bits=64),
        ColumnType(Kind.INTEGER, bits=32),
        ColumnType(Kind.INTEGER, bits=16),
        ColumnType(Kind.FLOAT),
        ColumnType(Kind.BOOLEAN),
        ColumnType(Kind.DATE),
        ColumnType(Kind.DATETIME, precision=6),
        ColumnType(Kind.DATETIME, precision=6, timezone=True),
        ColumnType(Kind.TIME, precision=6),
        ColumnType(Kind.UUID),
        ColumnType(Kind.STRING, length=20),
        ColumnType(Kind.STRING),
        ColumnType(Kind.BINARY, length=16),
        ColumnType(Kind.DECIMAL, precision=38, scale=10),
    ],
    ids=lambda ct: ct.kind.value,
)
def test_an_untyped_column_gets_the_arrow_type_its_cache_column_accepts(ct):
    ddl_type = DIALECT.column_type(ct)
    ddl = ddl_type.compile(dialect=server())
    assert accepted(ddl, mssql_bulk.arrow_type(ddl_type)), ddl


EDGE = pl.DataFrame(
    {
        "id": [1, 2, 3],
        "amount": [Decimal("12345678901234567890123456.789012345678"), Decimal("-0.000000000001"), None],
        "at": [dt.datetime(9999, 12, 31, 23, 59, 59, 999999), dt.datetime(1, 1, 1), None],
        "zoned": [
            dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.UTC),
            None,
            dt.datetime(1900, 1, 1, tzinfo=dt.UTC),
        ],
        "text": ["emoji \U0001f600 and \u00e9", "", None],
        "long": ["x" * 1_200_000, None, "short"],
        "guid": [str(uuid.UUID(int=1)), None, str(uuid.UUID(int=2**128 - 1))],
        "blob": [b"\x00\x01", b"", None],
        "flag": [True, False, None],
        "since": [dt.time(23, 59, 59, 999999), None, dt.time(0)],
        "day": [dt.date(9999, 12, 31), None, dt.date(1, 1, 1)],
        "nothing": [None, None, None],
    },
    schema_overrides={"amount": pl.Decimal(38, 12), "nothing": pl.Null},
)


def edge_table() -> sa.Table:
    return sa.Table(
        "edge",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger),
        sa.Column("amount", sa.DECIMAL(38, 12)),
        sa.Column("at", mssql.DATETIME2(7)),
        sa.Column("zoned", mssql.DATETIMEOFFSET(7)),
        sa.Column("text", mssql.NVARCHAR(80)),
        sa.Column("long", mssql.NVARCHAR()),
        sa.Column("guid", mssql.UNIQUEIDENTIFIER(as_uuid=False)),
        sa.Column("blob", mssql.VARBINARY()),
        sa.Column("flag", mssql.BIT()),
        sa.Column("since", mssql.TIME(7)),
        sa.Column("day", sa.Date),
        sa.Column("nothing", sa.DECIMAL(10, 2)),
    )


def test_batches_reach_the_driver_as_one_arrow_schema_with_every_value_intact():
    table = edge_table()
    names = [c.name for c in table.columns]
    later = EDGE.with_columns(pl.lit(Decimal("1.50")).cast(pl.Decimal(10, 2)).alias("nothing"))
    batches = list(mssql_bulk.record_batches(table, names, iter([EDGE, later.select(reversed(names))])))
    assert len({b.schema for b in batches}) == 1, "all batches share the first one's schema"
    schema = batches[0].schema
    assert schema.field("nothing").type == pa.decimal128(10, 2), "an all-NULL column takes the cache type"
    for column in table.columns:
        assert accepted(column.type.compile(dialect=server()), schema.field(column.name).type), column.name
    first = pl.from_arrow(pa.Table.from_batches(batches[:1]))
    assert first.drop("nothing").equals(EDGE.drop("nothing")), "values cross unchanged, '' and NULL apart"
    assert first.get_column("long")[0] == "x" * 1_200_000


class _Recorder:
    """Stands in for mssql_py_core.PyCoreConnection, the native connection the driver opens for a
    bulk copy (nothing here can reach a server): records what the driver hands over."""

    calls: list[dict[str, Any]] = []

    def __init__(self, context: dict[str, Any], python_logger: Any = None) -> None:
        self.context = dict(context)

    def cursor(self) -> _Recorder:
        return self

    def bulkcopy_arrow(self, table_name: str, source: Any, **options: Any) -> dict[str, Any]:
        batches = list(source)  # the driver pulls the whole stream on its one connection
        _Recorder.calls.append(
            {"table": table_name, "batches": batches, "options": options, "context": self.context}
        )
        return {"rows_copied": sum(b.num_rows for b in batches), "batch_count": 1}

    def close(self) -> None:
        pass


class _Connection:
    """What the driver's Cursor reads of its connection to start a bulk copy."""

    connection_str = "Server=tcp:cache.example,1433;Database=erp;UID=sync;PWD={p;w}"
    _token_provider = None
    _auth_type = None

    def cursor(self) -> Cursor:
        cursor = Cursor.__new__(_Cursor)
        cursor._connection = self
        cursor._timeout = 0
        return cursor


class _Cursor(Cursor):
    def close(self) -> None:  # no statement handle was ever allocated
        self.closed = True


def test_the_driver_streams_every_batch_through_one_bulk_copy(monkeypatch):
    monkeypatch.setattr(mssql_py_core, "PyCoreConnection", _Recorder)
    _Recorder.calls = []
    table = edge_table()
    frames = [EDGE.slice(0, 2), EDGE.slice(2, 1).select(reversed(EDGE.columns))]
    copied = mssql_bulk.copy(_Connection(), table, iter(frames), table_name="dbo.[edge__sync_new]")

    assert copied == 3
    (call,) = _Recorder.calls
    assert call["table"] == "dbo.[edge__sync_new]"
    assert call["options"] == {
        "batch_size": 0,
        "timeout": 0,
        "column_mappings": [c.name for c in table.columns],
        "keep_identity": False,
        "check_constraints": False,
        "table_lock": True,
        "keep_nulls": True,
        "fire_triggers": False,
        "use_internal_transaction": False,
        "python_logger": None,
    }
    assert call["context"]["server"] == "tcp:cache.example,1433" and call["context"]["database"] == "erp"
    assert [b.num_rows for b in call["batches"]] == [2, 1]


def test_a_batch_without_a_column_of_the_first_fails_naming_it(monkeypatch):
    monkeypatch.setattr(mssql_py_core, "PyCoreConnection", _Recorder)
    with pytest.raises(pl.exceptions.ColumnNotFoundError, match="flag"):
        mssql_bulk.copy(
            _Connection(), edge_table(), iter([EDGE, EDGE.drop("flag")]), table_name="dbo.[edge__sync_new]"
        )


def test_no_batch_opens_no_connection(monkeypatch):
    monkeypatch.setattr(mssql_py_core, "PyCoreConnection", _Recorder)
    _Recorder.calls = []
    assert mssql_bulk.copy(_Connection(), edge_table(), iter([]), table_name="dbo.[edge__sync_new]") == 0
    assert _Recorder.calls == []


def test_only_mssql_python_connections_take_the_bulk_path():
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        assert not mssql_reader.uses_driver(conn)
        assert DIALECT.fresh_table(conn, target(), several_batches=True) is None
        assert DIALECT.separate_staging(conn, target(), several_batches=True) is None
    engine.dispose()


def test_an_incremental_of_one_batch_stays_in_the_session_even_on_mssql_python(monkeypatch):
    """No second login for a small hourly: one batch stages in #temp inside the transaction."""
    monkeypatch.setattr(mssql_reader, "uses_driver", lambda conn: True)
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        assert DIALECT.separate_staging(conn, target(), several_batches=False) is None
    engine.dispose()
