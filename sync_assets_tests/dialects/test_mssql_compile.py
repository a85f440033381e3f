"""The exact SQL sent to SQL Server, compiled without a server (sqlalchemy.dialects.mssql)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql, sqlite

from sync_assets.catalog.models import TableSpec
from sync_assets.dialects import get_dialect, odbc
from sync_assets.dialects.base import Timeouts
from sync_assets.dialects.ddl import AddColumn
from sync_assets.dialects.merge import Merge
from sync_assets.dialects.mssql import (
    applock_mode_query,
    applock_statement,
    reload_delete,
    upsert_statements,
    values_per_statement,
    values_statements,
)
from sync_assets.dialects.odbc import odbc_diagnostics
from sync_assets.errors import UnsupportedType
from sync_assets.sources.sql import SourceColumn, SqlTable
from sync_assets.sync.audit import sync_log
from sync_assets.sync.target import target_table
from sync_assets.types import ColumnType, Kind, needs_text_transport

DIALECT = get_dialect("mssql")
STAGE = "[#_sync_stage_Order_0123abcd]"


def sql(statement: sa.ClauseElement) -> str:
    return str(statement.compile(dialect=mssql.dialect())).strip()


def reflected_orders() -> sa.Table:
    """What SQLAlchemy reflects from a SQL Server table with reserved and mixed-case names."""
    return sa.Table(
        "Orders",
        sa.MetaData(),
        sa.Column("OrderID", mssql.BIGINT),
        sa.Column("select", mssql.NVARCHAR(40)),
        sa.Column("Amount", mssql.MONEY),
        sa.Column("Ratio", mssql.DECIMAL(38, 10)),
        sa.Column("Note", mssql.NTEXT),
        sa.Column("Key", mssql.UNIQUEIDENTIFIER),
        sa.Column("Payload", mssql.VARBINARY(None)),
        sa.Column("Flag", mssql.BIT),
        sa.Column("ZonedAt", mssql.DATETIMEOFFSET),
        sa.Column("UpdatedAt", mssql.DATETIME2),
        schema="dbo",
    )


def orders_source() -> SqlTable:
    """The SqlTable `reflect()` builds for the reflected table (types mapped, UUID read as text)."""
    spec = TableSpec(
        name="orders",
        source="src",
        source_table="Orders",
        source_schema="dbo",
        target_table="Order",
        primary_key=["OrderID"],
        updated_at="UpdatedAt",
    )
    columns = []
    for col in reflected_orders().columns:
        ct = DIALECT.source_type(col.type, table="orders", column=col.name)
        expression = DIALECT.text_expression(col) if needs_text_transport(col.type, ct) else col
        columns.append(SourceColumn(col.name, col.name, ct, expression))
    return SqlTable(spec, columns)


def small_target() -> sa.Table:
    return sa.Table(
        "Order",
        sa.MetaData(),
        sa.Column("OrderID", mssql.BIGINT, primary_key=True),
        sa.Column("select", mssql.NVARCHAR(80)),
        sa.Column("UpdatedAt", mssql.DATETIME2(7)),
    )


def test_watermark_where_of_the_source_select():
    statement = orders_source().select(low=datetime(2026, 3, 1, 8), high=datetime(2026, 3, 2, 8))
    assert sql(statement) == (
        "SELECT dbo.[Orders].[OrderID] AS [OrderID], dbo.[Orders].[select] AS [select], "
        "dbo.[Orders].[Amount] AS [Amount], dbo.[Orders].[Ratio] AS [Ratio], dbo.[Orders].[Note] AS [Note], "
        "CAST(dbo.[Orders].[Key] AS NVARCHAR(max)) AS [Key], dbo.[Orders].[Payload] AS [Payload], "
        "dbo.[Orders].[Flag] AS [Flag], dbo.[Orders].[ZonedAt] AS [ZonedAt], "
        "dbo.[Orders].[UpdatedAt] AS [UpdatedAt] \n"
        "FROM dbo.[Orders] \n"
        "WHERE dbo.[Orders].[UpdatedAt] >= :UpdatedAt_1 AND dbo.[Orders].[UpdatedAt] <= :UpdatedAt_2"
    )
    assert statement.compile(dialect=mssql.dialect()).params == {
        "UpdatedAt_1": datetime(2026, 3, 1, 8),
        "UpdatedAt_2": datetime(2026, 3, 2, 8),
    }


def test_target_ddl_types_and_quoting():
    target = target_table(orders_source(), DIALECT)
    assert sql(sa.schema.CreateTable(target)) == (
        "CREATE TABLE [Order] (\n"
        "\t[OrderID] BIGINT NOT NULL, \n"
        "\t[select] NVARCHAR(80) NULL, \n"
        "\t[Amount] DECIMAL(19, 4) NULL, \n"
        "\t[Ratio] DECIMAL(38, 10) NULL, \n"
        "\t[Note] NVARCHAR(max) NULL, \n"
        "\t[Key] UNIQUEIDENTIFIER NULL, \n"
        "\t[Payload] VARBINARY(max) NULL, \n"
        "\t[Flag] BIT NULL, \n"
        "\t[ZonedAt] DATETIMEOFFSET(7) NULL, \n"
        "\t[UpdatedAt] DATETIME2(7) NULL, \n"
        "\tPRIMARY KEY ([OrderID])\n"
        ")"
    )
    (index,) = target.indexes
    assert sql(sa.schema.CreateIndex(index)) == "CREATE INDEX [ix_Order_UpdatedAt] ON [Order] ([UpdatedAt])"


def test_staging_is_a_session_temp_table_in_the_database_collation():
    staging = DIALECT.staging_table(target_table(orders_source(), DIALECT), suffix="_0123abcd")
    assert sql(sa.schema.CreateTable(staging)) == (
        f"CREATE TABLE {STAGE} (\n"
        "\t[OrderID] BIGINT NULL, \n"
        "\t[select] NVARCHAR(80) COLLATE DATABASE_DEFAULT NULL, \n"
        "\t[Amount] DECIMAL(19, 4) NULL, \n"
        "\t[Ratio] DECIMAL(38, 10) NULL, \n"
        "\t[Note] NVARCHAR(max) COLLATE DATABASE_DEFAULT NULL, \n"
        "\t[Key] UNIQUEIDENTIFIER NULL, \n"
        "\t[Payload] VARBINARY(max) NULL, \n"
        "\t[Flag] BIT NULL, \n"
        "\t[ZonedAt] DATETIMEOFFSET(7) NULL, \n"
        "\t[UpdatedAt] DATETIME2(7) NULL\n"
        ")"
    )
    assert sql(sa.schema.DropTable(staging)) == f"DROP TABLE {STAGE}"


def test_staging_name_fits_the_116_characters_of_a_temp_table():
    target = sa.Table("t" * 128, sa.MetaData(), sa.Column("id", sa.Integer))
    name = DIALECT.staging_table(target, suffix="_0123abcd").name
    assert len(name) == 116 and name.startswith("#_sync_stage_ttt") and name.endswith("_0123abcd")


LATEST = (
    "(SELECT ranked.[OrderID] AS [OrderID], ranked.[select] AS [select], ranked.[UpdatedAt] AS [UpdatedAt] \n"
    f"FROM (SELECT {STAGE}.[OrderID] AS [OrderID], {STAGE}.[select] AS [select], "
    f"{STAGE}.[UpdatedAt] AS [UpdatedAt], row_number() OVER (PARTITION BY {STAGE}.[OrderID] "
    f"ORDER BY {STAGE}.[UpdatedAt] DESC) AS _sync_rank \n"
    f"FROM {STAGE}) AS ranked \n"
    "WHERE ranked._sync_rank = :sync_rank_1) AS latest"
)


# Text compared by its bytes and their length: `=` and INTERSECT follow the collation and ignore
# trailing spaces. NOT EXISTS (... INTERSECT ...) is SQLAlchemy's NULL-safe IS DISTINCT FROM here.
CHANGED = (
    "NOT EXISTS (SELECT datalength([Order].[select]) INTERSECT SELECT datalength(latest.[select])) "
    "OR NOT EXISTS (SELECT CAST([Order].[select] AS VARBINARY(max)) "
    "INTERSECT SELECT CAST(latest.[select] AS VARBINARY(max))) "
    "OR NOT EXISTS (SELECT [Order].[UpdatedAt] INTERSECT SELECT latest.[UpdatedAt])"
)


def test_upsert_is_one_merge_of_the_latest_row_per_key_updating_only_changed_rows():
    target = small_target()
    staging = DIALECT.staging_table(target, suffix="_0123abcd")
    _, merge = upsert_statements(target, staging, key=["OrderID"], updated_at="UpdatedAt")
    assert sql(merge) == (
        "MERGE INTO [Order] WITH (HOLDLOCK)\n"
        f"USING {LATEST}\n"
        "ON [Order].[OrderID] = latest.[OrderID]\n"
        f"WHEN MATCHED AND ({CHANGED}) "
        "THEN UPDATE SET [select] = latest.[select], [UpdatedAt] = latest.[UpdatedAt]\n"
        "WHEN NOT MATCHED BY TARGET THEN INSERT ([OrderID], [select], [UpdatedAt]) "
        "VALUES (latest.[OrderID], latest.[select], latest.[UpdatedAt]);"
    )
    assert merge.compile(dialect=mssql.dialect()).params == {"sync_rank_1": 1}


def test_one_query_counts_staged_matched_and_changed_keys():
    """The flags come from a derived table: SQL Server refuses a subquery inside an aggregate."""
    target = small_target()
    staging = DIALECT.staging_table(target, suffix="_0123abcd")
    changes, _ = upsert_statements(target, staging, key=["OrderID"], updated_at="UpdatedAt")
    assert sql(changes.count_query()) == (
        "SELECT count(*) AS count_1, count(compared.matched) AS count_2, count(compared.changed) AS count_3 \n"
        "FROM (SELECT CASE WHEN ([Order].[OrderID] IS NOT NULL) THEN 1 END AS matched, "
        f"CASE WHEN ([Order].[OrderID] IS NOT NULL AND ({CHANGED})) THEN 1 END AS changed \n"
        f"FROM {LATEST} LEFT OUTER JOIN [Order] ON latest.[OrderID] = [Order].[OrderID]) AS compared"
    )


def test_binary_values_compare_with_their_length_and_others_as_they_are():
    """Binary values that differ only by trailing 0x00 bytes compare equal in SQL Server."""
    target = sa.Table(
        "T",
        sa.MetaData(),
        sa.Column("id", mssql.BIGINT, primary_key=True),
        sa.Column("Payload", mssql.VARBINARY()),
        sa.Column("Ratio", mssql.FLOAT(53)),
        sa.Column("Key", mssql.UNIQUEIDENTIFIER()),
    )
    latest = sa.select(target).subquery("latest")
    differ = DIALECT.values_differ((target.c[n], latest.c[n]) for n in ("Payload", "Ratio", "Key"))
    assert sql(differ) == (
        "NOT EXISTS (SELECT datalength([T].[Payload]) INTERSECT SELECT datalength(latest.[Payload])) "
        "OR NOT EXISTS (SELECT [T].[Payload] INTERSECT SELECT latest.[Payload]) "
        "OR NOT EXISTS (SELECT [T].[Ratio] INTERSECT SELECT latest.[Ratio]) "
        "OR NOT EXISTS (SELECT [T].[Key] INTERSECT SELECT latest.[Key])"
    )


def test_a_missing_sync_log_column_is_added_without_the_column_keyword():
    assert (
        sql(AddColumn(sync_log, sync_log.c.rows_unchanged))
        == "ALTER TABLE sync_log ADD rows_unchanged BIGINT NULL"
    )
    table = sa.Table("select", sa.MetaData(), sa.Column("order", sa.BigInteger))
    assert sql(AddColumn(table, table.c.order)) == "ALTER TABLE [select] ADD [order] BIGINT NULL"


def test_merge_with_a_composite_key_and_no_other_column_only_inserts():
    target = sa.Table(
        "Link",
        sa.MetaData(),
        sa.Column("A", sa.Integer, primary_key=True),
        sa.Column("b", sa.Integer, primary_key=True),
    )
    source = sa.select(target.c.A, target.c.b).subquery("latest")
    assert sql(Merge(target, source, key=["A", "b"])) == (
        "MERGE INTO [Link] WITH (HOLDLOCK)\n"
        "USING (SELECT [Link].[A] AS [A], [Link].b AS b \nFROM [Link]) AS latest\n"
        "ON [Link].[A] = latest.[A] AND [Link].b = latest.b\n"
        "WHEN NOT MATCHED BY TARGET THEN INSERT ([A], b) VALUES (latest.[A], latest.b);"
    )


def test_merge_is_refused_where_no_dialect_compiles_it():
    target = small_target()
    merge = Merge(target, sa.select(target).subquery("latest"), key=["OrderID"])
    with pytest.raises(sa.exc.CompileError, match="no MERGE statement for the sqlite dialect"):
        merge.compile(dialect=sqlite.dialect())


def test_mass_reload_deletes_under_one_table_lock():
    assert sql(reload_delete(small_target())) == "DELETE FROM [Order] WITH (TABLOCKX)"


def test_starts_take_turns_through_an_application_lock():
    assert sql(applock_statement()) == (
        "EXEC sp_getapplock @Resource = :resource, @LockMode = 'Exclusive', @LockOwner = 'Transaction'"
    )
    assert sql(applock_mode_query()) == "SELECT APPLOCK_MODE('public', :resource, 'Transaction')"


@pytest.mark.parametrize(
    ("columns", "rows"), [(1, 1000), (2, 1000), (3, 699), (7, 299), (100, 20), (2100, 1), (5000, 1)]
)
def test_multi_row_values_stay_within_2100_parameters(columns, rows):
    assert values_per_statement(columns) == rows
    assert rows * columns < DIALECT.capabilities.max_parameters or rows == 1


def test_values_fallback_chunks_statements_by_parameter_count():
    staging = sa.Table("#s", sa.MetaData(), *[sa.Column(f"c{i}", sa.Integer) for i in range(7)])
    frame = pl.DataFrame({f"c{i}": range(700) for i in range(7)})
    statements = list(values_statements(staging, frame))
    assert [len(s.compile(dialect=mssql.dialect()).params) for s in statements] == [2093, 2093, 714]
    first = sql(statements[0])
    assert first.startswith("INSERT INTO [#s] (c0, c1, c2, c3, c4, c5, c6) VALUES (:c0_m0, :c1_m0,")
    assert first.count("), (") == 298


def test_bulk_load_input_sizes_follow_the_cache_types():
    target = target_table(orders_source(), DIALECT)
    types = {c.name: c.type for c in target.columns}
    frame = pl.DataFrame(
        {
            "OrderID": [1, None],
            "select": ["🚀 zürich", None],
            "Amount": [Decimal("-922337203685477.5808"), None],
            "Ratio": [Decimal("0.0000000001"), None],
            "Note": ["", None],
            "Key": ["6f9619ff-8b86-d011-b42d-00c04fc964ff", None],
            "Payload": [b"\x00\xff", None],
            "Flag": [True, None],
            "ZonedAt": [datetime(2026, 3, 1, 8, 0, 0, 123456), None],
            "UpdatedAt": [datetime(2026, 3, 1, 8, 0, 0, 123456), None],
        },
        schema_overrides={
            "Amount": pl.Decimal(19, 4),
            "Ratio": pl.Decimal(38, 10),
            "ZonedAt": pl.Datetime("us", "UTC"),
            "UpdatedAt": pl.Datetime("ns"),
        },
    )
    # 100 ns digit 7, the 8th and 9th dropped: DATETIME2(7) keeps 7.
    frame = frame.with_columns(pl.col("UpdatedAt") + pl.duration(nanoseconds=789))
    values = odbc.to_parameters(frame, types)
    assert values.row(0) == (
        1,
        "🚀 zürich",
        Decimal("-922337203685477.5808"),
        Decimal("0.0000000001"),
        "",
        "6f9619ff-8b86-d011-b42d-00c04fc964ff",
        b"\x00\xff",
        True,
        "2026-03-01T08:00:00.1234560+00:00",
        "2026-03-01T08:00:00.1234567",
    )
    assert values.row(1) == (None,) * 10
    assert odbc.input_sizes(values, types) == [
        (odbc.SQL_BIGINT, 0, 0),
        (odbc.SQL_WVARCHAR, 12, 0),
        (odbc.SQL_DECIMAL, 19, 4),
        (odbc.SQL_DECIMAL, 38, 10),
        (odbc.SQL_WVARCHAR, 1, 0),
        (odbc.SQL_WVARCHAR, 36, 0),
        (odbc.SQL_VARBINARY, 2, 0),
        (odbc.SQL_BIT, 0, 0),
        (odbc.SQL_WVARCHAR, 33, 0),
        (odbc.SQL_WVARCHAR, 27, 0),
    ]


def test_microsecond_timestamps_bind_as_datetime2_7():
    types = {"at": mssql.DATETIME2(7), "clock": mssql.TIME(7)}
    frame = pl.DataFrame(
        {
            "at": [datetime(1900, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)],
            "clock": [datetime(2026, 1, 1, 23, 59, 59, 999999).time(), None],
        }
    )
    values = odbc.to_parameters(frame, types)
    assert values.rows() == [
        (datetime(1900, 1, 1), "23:59:59.9999990"),
        (datetime(9999, 12, 31, 23, 59, 59, 999999), None),
    ]
    assert odbc.input_sizes(values, types) == [(odbc.SQL_TYPE_TIMESTAMP, 27, 7), (odbc.SQL_WVARCHAR, 16, 0)]


@pytest.mark.parametrize(
    ("reflected", "expected"),
    [
        (sa.DATETIME(), ColumnType(Kind.DATETIME, precision=3)),
        # pyodbc reads at most microseconds: that is what a sync can deliver from these.
        (mssql.DATETIME2(), ColumnType(Kind.DATETIME, precision=6)),
        (mssql.DATETIME2(3), ColumnType(Kind.DATETIME, precision=3)),
        (mssql.SMALLDATETIME(), ColumnType(Kind.DATETIME, precision=0)),
        (mssql.DATETIMEOFFSET(), ColumnType(Kind.DATETIME, precision=6, timezone=True)),
        (mssql.TIME(), ColumnType(Kind.TIME, precision=6)),
        (mssql.UNIQUEIDENTIFIER(), ColumnType(Kind.UUID)),
        (mssql.MONEY(), ColumnType(Kind.DECIMAL, precision=19, scale=4)),
        (mssql.SMALLMONEY(), ColumnType(Kind.DECIMAL, precision=10, scale=4)),
        (mssql.TINYINT(), ColumnType(Kind.INTEGER, bits=16)),
        (mssql.BIT(), ColumnType(Kind.BOOLEAN)),
        (mssql.NVARCHAR(40), ColumnType(Kind.STRING, length=40)),
        (mssql.NVARCHAR(), ColumnType(Kind.STRING)),
        (mssql.NTEXT(), ColumnType(Kind.STRING)),
        (mssql.XML(), ColumnType(Kind.STRING)),
        (mssql.VARBINARY(None), ColumnType(Kind.BINARY)),
        (mssql.IMAGE(), ColumnType(Kind.BINARY)),
        (mssql.ROWVERSION(), ColumnType(Kind.BINARY, length=8)),
        (mssql.TIMESTAMP(), ColumnType(Kind.BINARY, length=8)),
        (mssql.DECIMAL(38, 10), ColumnType(Kind.DECIMAL, precision=38, scale=10)),
        (mssql.REAL(), ColumnType(Kind.FLOAT)),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, sa.types.TypeEngine) else "",
)
def test_source_types(reflected, expected):
    assert DIALECT.source_type(reflected, table="t", column="c") == expected


@pytest.mark.parametrize(
    "reflected", [mssql.SQL_VARIANT(), sa.types.NULLTYPE], ids=["sql_variant", "geography"]
)
def test_source_types_that_cannot_be_mapped_are_refused(reflected):
    with pytest.raises(UnsupportedType, match="column 'c' has type"):
        DIALECT.source_type(reflected, table="t", column="c")


@pytest.mark.parametrize(
    ("ct", "ddl", "loss"),
    [
        (ColumnType(Kind.STRING, length=10), "NVARCHAR(20)", None),
        (ColumnType(Kind.STRING, length=2001), "NVARCHAR(max)", None),
        (ColumnType(Kind.BINARY, length=8), "VARBINARY(8)", None),
        (ColumnType(Kind.DECIMAL, precision=18, scale=2), "DECIMAL(18, 2)", None),
        (
            ColumnType(Kind.DECIMAL),
            "DECIMAL(38, 10)",
            "unbounded decimal needs more than the 38 digits a mssql DECIMAL keeps",
        ),
        (
            ColumnType(Kind.DECIMAL, precision=50, scale=20),
            "DECIMAL(38, 20)",
            "decimal(50,20) needs more than the 38 digits a mssql DECIMAL keeps",
        ),
        (
            ColumnType(Kind.DATETIME, precision=9),
            "DATETIME2(7)",
            "9 fractional second digits, the mssql cache keeps 7",
        ),
        (ColumnType(Kind.DATETIME, precision=7, timezone=True), "DATETIMEOFFSET(7)", None),
        (ColumnType(Kind.TIME, precision=7), "TIME(7)", None),
        (ColumnType(Kind.UUID), "UNIQUEIDENTIFIER", None),
        (ColumnType(Kind.FLOAT), "FLOAT(53)", None),
        (ColumnType(Kind.INTEGER, bits=16), "SMALLINT", None),
        (ColumnType(Kind.BOOLEAN), "BIT", None),
    ],
    ids=lambda v: v.describe() if isinstance(v, ColumnType) else "",
)
def test_cache_types_and_what_they_lose(ct, ddl, loss):
    assert str(DIALECT.column_type(ct).compile(dialect=mssql.dialect())) == ddl
    assert DIALECT.loss(ct) == loss


def _pyodbc_error(cls_name: str, state: str, message: str) -> Exception:
    pyodbc = pytest.importorskip("pyodbc")
    return getattr(pyodbc, cls_name)(state, message)


@pytest.mark.parametrize(
    ("cls_name", "state", "message", "transient"),
    [
        (
            "OperationalError",
            "08S01",
            "[08S01] [Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: Error code 0x2746 (10054) (SQLExecDirectW)",
            True,
        ),
        (
            "OperationalError",
            "HYT00",
            "[HYT00] [Microsoft][ODBC Driver 18 for SQL Server]Query timeout expired (0) (SQLExecDirectW)",
            True,
        ),
        (
            "OperationalError",
            "HYT01",
            "[HYT01] [Microsoft][ODBC Driver 18 for SQL Server]Connection timeout expired (0) (SQLDriverConnect)",
            True,
        ),
        (
            "DatabaseError",
            "40001",
            "[40001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Transaction (Process ID 52) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction. (1205) (SQLExecDirectW)",
            True,
        ),
        (
            "DatabaseError",
            "HY000",
            "[HY000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Lock request time out period exceeded. (1222) (SQLExecDirectW)",
            True,
        ),
        (
            "DatabaseError",
            "42000",
            "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Database 'sales' on server 'x' is not currently available. (40613) (SQLDriverConnect); [42000] [Microsoft][ODBC Driver 18 for SQL Server]Login failed (18456)",
            True,
        ),
        (
            "DatabaseError",
            "42000",
            "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The service is currently busy. (40501) (SQLExecDirectW)",
            True,
        ),
        (
            "ProgrammingError",
            "42S02",
            "[42S02] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Invalid object name 'dbo.Orders'. (208) (SQLExecDirectW)",
            False,
        ),
        (
            "IntegrityError",
            "23000",
            "[23000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Violation of PRIMARY KEY constraint 'PK_x'. Cannot insert duplicate key in object 'dbo.x'. The duplicate key value is (1205). (2627) (SQLExecDirectW)",
            False,
        ),
        (
            "ProgrammingError",
            "42000",
            "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]deadlocked, timeout, connection lost (deadlock) (102) (SQLExecDirectW)",
            False,
        ),
    ],
    ids=[
        "socket-reset",
        "query-timeout",
        "connect-timeout",
        "deadlock",
        "lock-timeout",
        "azure-unavailable",
        "azure-busy",
        "missing-table",
        "duplicate-key",
        "wording-is-ignored",
    ],
)
def test_transient_errors_by_sqlstate_and_error_number(cls_name, state, message, transient):
    error = _pyodbc_error(cls_name, state, message)
    assert DIALECT.is_transient(error) is transient
    wrapped = sa.exc.DBAPIError.instance("SELECT 1", None, error, Exception)
    assert DIALECT.is_transient(wrapped) is transient


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            "28000",
            "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'jde'. (18456) (SQLDriverConnect)",
        ),
        (
            "28000",
            "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'jde'. Reason: The account is disabled. (18470) (SQLDriverConnect)",
        ),
        ("42000", "[42000] [FreeTDS][SQL Server]Login failed for user 'jde'. (18456) (SQLDriverConnect)"),
        (
            "28000",
            "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'jde' because the account is currently locked out. The system administrator can unlock it. (18486) (SQLDriverConnect)",
        ),
        (
            "28000",
            "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'jde'. Reason: The password of the account has expired. (18487) (SQLDriverConnect)",
        ),
        (
            "28000",
            "[28000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Login failed for user 'jde'. Reason: The password of the account must be changed. (18488) (SQLDriverConnect)",
        ),
        (
            "42000",
            "[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]The SELECT permission was denied on the object 'F4801', database 'JDE', schema 'PRODDTA'. (229) (SQLExecDirectW)",
        ),
        # A connection SQLSTATE, retried on its own, around a refused login.
        (
            "08001",
            "[08001] [FreeTDS][SQL Server]Unable to connect to data source (0) (SQLDriverConnect); [42000] [FreeTDS][SQL Server]Login failed for user 'jde'. (18456)",
        ),
        ("08S01", "[08S01] [FreeTDS][SQL Server]Login incorrect. (20014) (SQLDriverConnect)"),
    ],
    ids=[
        "login-failed",
        "disabled",
        "freetds-42000",
        "locked-out",
        "expired",
        "must-change",
        "permission",
        "08001-wrapped",
        "freetds-login-incorrect",
    ],
)
def test_refused_logins_and_permissions_are_never_retried(state, message):
    error = _pyodbc_error("Error", state, message)
    wrapped = sa.exc.DBAPIError.instance("connect", None, error, Exception)
    for err in (error, wrapped):
        assert DIALECT.is_permanent(err) and not DIALECT.is_transient(err)


def test_cannot_open_database_stays_transient():
    """4060 comes after the password was accepted, and Azure SQL returns it while a database
    fails over (SqlClient retries it too): retried, with 18456 beside it or not."""
    message = (
        '[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Cannot open database "JDE" '
        "requested by the login. The login failed. (4060) (SQLDriverConnect); [28000] [Microsoft][ODBC "
        "Driver 18 for SQL Server][SQL Server]Login failed for user 'jde'. (18456)"
    )
    error = _pyodbc_error("Error", "42000", message)
    assert DIALECT.is_transient(error) and not DIALECT.is_permanent(error)


def test_login_timeout_and_keepalive_by_driver():
    timeouts = Timeouts(connect=30, keepalive=45)
    microsoft = sa.make_url("mssql+pyodbc://u@h/db?driver=ODBC+Driver+18+for+SQL+Server")
    assert DIALECT.engine_options(microsoft, role="cache", timeouts=timeouts) == {
        "connect_args": {"timeout": 30, "APP": "sync_assets cache", "KeepAlive": 45, "KeepAliveInterval": 1}
    }
    # FreeTDS turns keep-alive on by itself and has no keyword for it.
    freetds = sa.make_url("mssql+pyodbc://u@h/db?driver=FreeTDS")
    assert DIALECT.engine_options(freetds, role="source", timeouts=timeouts) == {
        "connect_args": {"timeout": 30, "APP": "sync_assets source"}
    }


def test_native_numbers_come_only_from_the_diagnostic_suffix():
    error = Exception(
        "42000", "[42000] [x][SQL Server]value (1205) is odd (245) (SQLExecDirectW); [01000] [x]note (3621)"
    )
    assert odbc_diagnostics(error) == ("42000", frozenset({245, 3621}))
    assert odbc_diagnostics(Exception("plain message")) is None


@pytest.mark.parametrize(
    ("ct", "ddl"),
    [
        (ColumnType(Kind.STRING), "NVARCHAR(450)"),  # NVARCHAR(max) cannot be a key
        (ColumnType(Kind.STRING, length=225), "NVARCHAR(450)"),
        (ColumnType(Kind.STRING, length=226), "NVARCHAR(450)"),
        (ColumnType(Kind.STRING, length=12), "NVARCHAR(24)"),
        (ColumnType(Kind.BINARY), "VARBINARY(900)"),
        (ColumnType(Kind.INTEGER, bits=64), "BIGINT"),
    ],
)
def test_key_and_watermark_columns_fit_an_index_key(ct, ddl):
    assert str(DIALECT.key_column_type(ct).compile(dialect=mssql.dialect())) == ddl


def test_a_text_key_is_created_indexable():
    spec = TableSpec(
        name="codes", source="src", source_table="codes", primary_key=["code"], updated_at="changed"
    )
    columns = [
        SourceColumn("code", "code", ColumnType(Kind.STRING), sa.column("code")),
        SourceColumn("label", "label", ColumnType(Kind.STRING), sa.column("label")),
        SourceColumn("changed", "changed", ColumnType(Kind.DATETIME, precision=6), sa.column("changed")),
    ]
    target = target_table(SqlTable(spec, columns), DIALECT)
    ddl = sql(sa.schema.CreateTable(target))
    assert "code NVARCHAR(450) NOT NULL" in ddl and "label NVARCHAR(max) NULL" in ddl
