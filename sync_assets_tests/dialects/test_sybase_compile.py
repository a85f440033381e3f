"""SAP ASE as a source, without a server: exact SQL, reflected types, error classification, FreeTDS."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
import sqlalchemy_sybase
from sqlalchemy_sybase import base as ase

from sync_assets.catalog.models import TableSpec
from sync_assets.dialects import get_dialect
from sync_assets.dialects.base import Timeouts
from sync_assets.dialects.sybase import (
    BIGDATETIME,
    BIGTIME,
    ROWVERSION,
    SMALLDATETIME,
    UNSIGNED_BIGINT,
    UNSIGNED_INT,
    UNSIGNED_SMALLINT,
    teach_reflection,
)
from sync_assets.errors import UnsupportedType
from sync_assets.sources.sql import SqlTable, _check_columns, source_columns
from sync_assets.types import ColumnType, Kind
from sync_assets_tests.helpers import free_port

DIALECT = get_dialect("sybase")
TIMEOUTS = Timeouts(connect=30, keepalive=60)
ASE = sa.create_engine("sybase+pyodbc://sync@cms_dsn/cms?driver=FreeTDS").dialect  # pyodbc: qmark binds
teach_reflection(ASE)


def accounts() -> sa.Table:
    return sa.Table(
        "cms_account",
        sa.MetaData(),
        sa.Column("acct_id", ase.INTEGER()),
        sa.Column("name", ase.UNIVARCHAR(40)),
        sa.Column("balance", ase.MONEY()),
        sa.Column("changed", BIGDATETIME()),
        schema="dbo",
    )


def source() -> SqlTable:
    table = TableSpec(
        name="accounts",
        source="cms",
        source_table="cms_account",
        source_schema="dbo",
        primary_key=["acct_id"],
        updated_at="changed_at",
        columns={"changed": "changed_at"},
    )
    built = SqlTable(table, source_columns(table, accounts(), DIALECT, typed=True))
    _check_columns(built)
    return built


def test_select_with_watermark_bounds():
    statement = source().select(low=datetime(2026, 3, 1), high=datetime(2026, 3, 2))
    assert str(statement.compile(dialect=ASE)) == (
        "SELECT dbo.cms_account.acct_id AS acct_id, dbo.cms_account.name AS name, "
        "dbo.cms_account.balance AS balance, dbo.cms_account.changed AS changed_at \n"
        "FROM dbo.cms_account \n"
        "WHERE dbo.cms_account.changed >= ? AND dbo.cms_account.changed <= ?"
    )
    assert statement.compile(dialect=ASE).positiontup == ["changed_1", "changed_2"]


def test_max_watermark():
    assert str(source().max_watermark().compile(dialect=ASE)) == (
        "SELECT max(dbo.cms_account.changed) AS max_1 \nFROM dbo.cms_account"
    )


def test_reserved_words_are_bracketed():
    table = sa.Table("order", sa.MetaData(), sa.Column("key", ase.INTEGER()))
    assert str(sa.select(table.c.key.label("key")).compile(dialect=ASE)) == (
        "SELECT [order].[key] AS [key] \nFROM [order]"
    )


# What sqlalchemy-sybase reflects for each systypes name, once the engine was prepared.
REFLECTED = [
    ("datetime", ColumnType(Kind.DATETIME, precision=3)),
    ("smalldatetime", ColumnType(Kind.DATETIME, precision=0)),
    ("bigdatetime", ColumnType(Kind.DATETIME, precision=6)),
    ("date", ColumnType(Kind.DATE)),
    ("time", ColumnType(Kind.TIME, precision=3)),
    ("bigtime", ColumnType(Kind.TIME, precision=6)),
    ("char", ColumnType(Kind.STRING, length=12)),
    ("varchar", ColumnType(Kind.STRING, length=12)),
    ("unichar", ColumnType(Kind.STRING, length=12)),
    ("univarchar", ColumnType(Kind.STRING, length=12)),
    ("nvarchar", ColumnType(Kind.STRING, length=12)),
    ("text", ColumnType(Kind.STRING)),
    ("unitext", ColumnType(Kind.STRING)),
    ("sysname", ColumnType(Kind.STRING, length=12)),
    ("money", ColumnType(Kind.DECIMAL, precision=19, scale=4)),
    ("smallmoney", ColumnType(Kind.DECIMAL, precision=10, scale=4)),
    ("numeric", ColumnType(Kind.DECIMAL, precision=18, scale=4)),
    ("decimal", ColumnType(Kind.DECIMAL, precision=18, scale=4)),
    ("tinyint", ColumnType(Kind.INTEGER, bits=16)),
    ("smallint", ColumnType(Kind.INTEGER, bits=16)),
    ("int", ColumnType(Kind.INTEGER, bits=32)),
    ("bigint", ColumnType(Kind.INTEGER, bits=64)),
    ("usmallint", ColumnType(Kind.INTEGER, bits=32)),
    ("uint", ColumnType(Kind.INTEGER, bits=64)),
    ("ubigint", ColumnType(Kind.DECIMAL, precision=20, scale=0)),
    ("float", ColumnType(Kind.FLOAT)),
    ("real", ColumnType(Kind.FLOAT)),
    ("double precision", ColumnType(Kind.FLOAT)),
    ("bit", ColumnType(Kind.BOOLEAN)),
    ("binary", ColumnType(Kind.BINARY)),
    ("varbinary", ColumnType(Kind.BINARY)),
    ("image", ColumnType(Kind.BINARY)),
    ("timestamp", ColumnType(Kind.BINARY, length=8)),  # a row version, not a time
]


@pytest.mark.parametrize(("systype", "expected"), REFLECTED, ids=[n for n, _ in REFLECTED])
def test_reflected_ase_types(systype, expected):
    info = ASE._get_column_info("c", systype, True, False, None, 18, 4, 12)
    assert DIALECT.source_type(info["type"], table="t", column="c") == expected


def test_sqlalchemy_sybase_alone_gets_these_wrong():
    plain = sqlalchemy_sybase.dialect()
    with pytest.warns(sa.exc.SAWarning, match="Did not recognize type 'bigdatetime'"):
        assert isinstance(
            plain._get_column_info("c", "bigdatetime", True, False, None, None, None, 8)["type"],
            sa.types.NullType,
        )
    assert isinstance(
        plain._get_column_info("c", "timestamp", True, False, None, None, None, 8)["type"], sa.DateTime
    )
    assert isinstance(
        plain._get_column_info("c", "double precision", True, False, None, None, None, 8)["type"], sa.Numeric
    )


def test_teaching_one_engine_leaves_the_shared_type_table_alone():
    assert "bigdatetime" not in ase.ischema_names
    assert "bigdatetime" not in sqlalchemy_sybase.dialect().ischema_names


TYPES = [
    (BIGDATETIME(), ColumnType(Kind.DATETIME, precision=6)),
    (SMALLDATETIME(), ColumnType(Kind.DATETIME, precision=0)),
    (BIGTIME(), ColumnType(Kind.TIME, precision=6)),
    (UNSIGNED_SMALLINT(), ColumnType(Kind.INTEGER, bits=32)),
    (UNSIGNED_INT(), ColumnType(Kind.INTEGER, bits=64)),
    (UNSIGNED_BIGINT(), ColumnType(Kind.DECIMAL, precision=20, scale=0)),
    (ROWVERSION(), ColumnType(Kind.BINARY, length=8)),
    (ase.UNITEXT(), ColumnType(Kind.STRING)),
    (ase.UNICHAR(10), ColumnType(Kind.STRING, length=10)),
    (ase.IMAGE(), ColumnType(Kind.BINARY)),
    (ase.BIT(), ColumnType(Kind.BOOLEAN)),
]


@pytest.mark.parametrize(("type_", "expected"), TYPES, ids=[repr(t) for t, _ in TYPES])
def test_ase_type_mapping(type_, expected):
    assert DIALECT.source_type(type_, table="t", column="c") == expected


@pytest.mark.parametrize(
    "type_", [ase.UNIQUEIDENTIFIER(), sa.types.NULLTYPE], ids=["uniqueidentifier", "user type"]
)
def test_unknown_types_are_refused(type_):
    with pytest.raises(UnsupportedType, match="column 'c' has type"):
        DIALECT.source_type(type_, table="t", column="c")


def odbc_error(state: str, message: str) -> Exception:
    """A pyodbc.Error as pyodbc raises it: (SQLSTATE, message ending '(native error) (SQLFunction)')."""
    import pyodbc

    return pyodbc.Error(state, message)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("40001", "[40001] [FreeTDS][SQL Server]Your server command was deadlocked (1205) (SQLExecDirectW)"),
        ("ZZZZZ", "[ZZZZZ] [FreeTDS][SQL Server]Your server command was deadlocked (1205) (SQLExecDirectW)"),
        ("HY000", "[HY000] [FreeTDS][SQL Server]SQL Server has run out of LOCKS (1204) (SQLExecDirectW)"),
        (
            "HY000",
            "[HY000] [FreeTDS][SQL Server]Could not acquire a lock within the specified wait (12205) (SQLFetch)",
        ),
        (
            "08S01",
            "[08S01] [FreeTDS][SQL Server]Unable to connect: Adaptive Server is unavailable (20009) (SQLDriverConnect)",
        ),
        ("HYT00", "[HYT00] [FreeTDS][SQL Server]Login timeout expired (0) (SQLDriverConnect)"),
        ("HY000", "[HY000] [FreeTDS][SQL Server]Read from the server failed (20004) (SQLFetch)"),
    ],
)
def test_transient_ase_errors(state, message):
    err = odbc_error(state, message)
    assert DIALECT.is_transient(err)
    assert DIALECT.is_transient(sa.exc.DBAPIError("SELECT 1", {}, err))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("42S02", "[42S02] [FreeTDS][SQL Server]orders not found. (208) (SQLExecDirectW)"),
        ("22003", "[22003] [FreeTDS][SQL Server]Arithmetic overflow (247) (SQLFetch); [01000] note (12055)"),
    ],
)
def test_permanent_ase_errors(state, message):
    assert not DIALECT.is_transient(sa.exc.DBAPIError("SELECT 1", {}, odbc_error(state, message)))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("28000", "[28000] [FreeTDS][SQL Server]Login failed. (4002) (SQLDriverConnect)"),
        ("42000", "[42000] [FreeTDS][SQL Server]Login failed.\n (4002) (SQLDriverConnect)"),
        # Wrapped in a connection SQLSTATE, which alone would be retried.
        (
            "08001",
            "[08001] [FreeTDS][SQL Server]Unable to connect to data source (0) (SQLDriverConnect); "
            "[42000] [FreeTDS][SQL Server]Login failed. (4002)",
        ),
        ("08001", "[08001] [FreeTDS][SQL Server]Login incorrect. (20014) (SQLDriverConnect)"),
    ],
    ids=["28000", "42000", "08001-wrapped", "freetds-login-incorrect"],
)
def test_refused_logins_are_never_retried(state, message):
    err = sa.exc.DBAPIError("connect", {}, odbc_error(state, message))
    assert DIALECT.is_permanent(err) and not DIALECT.is_transient(err)


def test_engine_names_its_session_and_bounds_the_login():
    options = DIALECT.engine_options(
        sa.make_url("sybase+pyodbc://u@h/db"), role="source", timeouts=Timeouts(connect=12.5, keepalive=60)
    )
    assert options == {"connect_args": {"timeout": 13, "APP": "sync_assets source"}}


def test_a_closed_port_through_pyodbc_and_freetds_is_transient():
    pyodbc = pytest.importorskip("pyodbc", reason="pyodbc is not installed")
    if "FreeTDS" not in pyodbc.drivers():
        pytest.skip("the FreeTDS ODBC driver is not registered with unixODBC (odbcinst.ini)")
    port = free_port()
    url = sa.URL.create(
        "sybase+pyodbc",
        username="sync",
        password="secret",
        host="127.0.0.1",
        port=port,
        database="cms",
        query={"driver": "FreeTDS", "TDS_Version": "5.0"},
    )
    engine = sa.create_engine(url, **DIALECT.engine_options(url, role="source", timeouts=TIMEOUTS))
    DIALECT.prepare_engine(engine, role="source")
    try:
        with pytest.raises(sa.exc.DBAPIError) as caught:
            engine.connect()
    finally:
        engine.dispose()
    assert caught.value.orig.args[0].startswith("08")  # type: ignore[union-attr]
    assert DIALECT.is_transient(caught.value)
