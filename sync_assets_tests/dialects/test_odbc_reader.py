"""odbc_reader.py: arrow-odbc's Arrow batches from ODBC sources.

The reads run for real through arrow-odbc and psqlODBC against the test PostgreSQL (the same
ODBC calls an ASE or SQL Server read makes, with the C types bound from the batch schema); the
SQL sent to SQL Server and ASE is compiled exactly; connecting goes through the real FreeTDS
driver against a TDS peer that refuses the login. No ASE or SQL Server runs here: the integration
suites run the reader when SYNC_TEST_SYBASE_URL / SYNC_TEST_MSSQL_URL are set.
"""

from __future__ import annotations

import math
import uuid
from datetime import date, datetime, time
from decimal import Decimal

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql, postgresql

from sync_assets.catalog.loader import CatalogError, load_catalog
from sync_assets.dialects import get_dialect, odbc_reader
from sync_assets.errors import DataError, SyncError
from sync_assets.resources.database import SqlDatabase
from sync_assets_tests.helpers import PSQLODBC, free_port, psqlodbc_connection_string
from sync_assets_tests.tds import ServerMessage, refusing_tds_server

arrow_odbc = pytest.importorskip("arrow_odbc", reason="arrow-odbc not installed: pip install arrow-odbc")
MAX_DECIMAL = Decimal("9999999999999999999999999999.9999999999")
MIN_DECIMAL = Decimal(
    "-9999999999999999999999999999.9999999999"
)  # not -MAX_DECIMAL: that rounds to 28 digits
LONG_TEXT = "x" * 200_000 + "🚀"

SCHEMA: dict[str, pl.DataType] = {
    "id": pl.Int64(),
    "small": pl.Int16(),
    "body": pl.String(),
    "short": pl.String(),
    "amount": pl.Decimal(38, 10),
    "ratio": pl.Float64(),
    "flag": pl.Boolean(),
    "day": pl.Date(),
    "at": pl.Datetime("us"),
    "clock": pl.Time(),
    "blob": pl.Binary(),
    "ident": pl.String(),
    "loose": pl.String(),
}


def _psqlodbc():
    pyodbc = pytest.importorskip("pyodbc", reason="pyodbc not installed")
    if PSQLODBC not in pyodbc.drivers():
        pytest.skip("psqlODBC not installed: apt-get install unixodbc odbc-postgresql")


def _edge_table() -> sa.Table:
    return sa.Table(
        "edge",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("small", sa.SmallInteger),
        sa.Column("body", sa.Unicode(250_000)),
        sa.Column("short", sa.Unicode(12)),
        sa.Column("amount", sa.Numeric(38, 10)),
        sa.Column("ratio", sa.Double),
        sa.Column("flag", sa.Boolean),
        sa.Column("day", sa.Date),
        sa.Column("at", postgresql.TIMESTAMP(precision=6)),
        sa.Column("clock", postgresql.TIME(precision=6)),
        sa.Column("blob", sa.LargeBinary(length=102_400)),
        sa.Column("ident", sa.Uuid(as_uuid=False)),
        sa.Column("loose", sa.Numeric),  # no declared scale: read as exact text, as the row path does
    )


def _edge_rows() -> list[dict]:
    return [
        {
            "id": 1, "small": -32768, "body": "", "short": "", "amount": MAX_DECIMAL, "ratio": -0.0,
            "flag": True, "day": date(1900, 1, 1), "at": datetime(1900, 1, 1), "clock": time(0, 0),
            "blob": b"", "ident": str(uuid.UUID(int=2**100 + 1)), "loose": Decimal("1.000000000000000000000000000001"),
        },
        {
            "id": 2, "small": 32767, "body": None, "short": None, "amount": MIN_DECIMAL, "ratio": None,
            "flag": False, "day": date(9999, 12, 31), "at": datetime(9999, 12, 31, 23, 59, 59, 999999),
            "clock": time(23, 59, 59, 999999), "blob": None, "ident": None, "loose": None,
        },
        {
            "id": 3, "small": None, "body": "東京 🚀 Zürich 𝄞", "short": "🚀🚀🚀", "amount": Decimal("-0E-10"),
            "ratio": 1.7976931348623157e308, "flag": None, "day": None, "at": None, "clock": None,
            "blob": bytes(range(256)) * 400, "ident": str(uuid.UUID(int=3 * 2**100 + 3)), "loose": Decimal("-12345678901234567890"),
        },
        {
            "id": 4, "small": 0, "body": LONG_TEXT, "short": "naïve", "amount": Decimal("0.0000000001"),
            "ratio": 5e-324, "flag": True, "day": date(2026, 3, 1), "at": datetime(2026, 3, 1, 8, 0, 0, 123456),
            "clock": time(12, 0, 0, 1), "blob": b"\x00", "ident": None, "loose": Decimal("0"),
        },
        {
            "id": 5, "small": 1, "body": 'O\'Brien "q", comma\n\ttab\\', "short": "abc", "amount": None,
            "ratio": 0.1, "flag": False, "day": date(1970, 1, 1), "at": datetime(1970, 1, 1, 0, 0, 0, 1),
            "clock": time(8, 30), "blob": b"\xff\x00\xfe", "ident": str(uuid.UUID(int=5)), "loose": Decimal("1E+20"),
        },
    ]  # fmt: skip


def _select(table: sa.Table) -> sa.Select:
    """What sources/sql.py sends for this table: UUIDs and unscaled numerics under a text cast."""
    columns = [
        sa.cast(c, sa.Text).label(c.name) if c.name in ("ident", "loose") else c.label(c.name)
        for c in table.columns
    ]
    return sa.select(*columns).order_by(table.c.id)


@pytest.fixture
def edge_source(make_pg_database):
    _psqlodbc()
    url = make_pg_database()
    table = _edge_table()
    engine = sa.create_engine(url)
    table.create(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), _edge_rows())
    engine.dispose()
    return url, table


def _read(url: sa.URL, statement: sa.Select, schema: dict[str, pl.DataType], *, batch_size: int = 2):
    plan = odbc_reader.read_plan(statement, schema)
    assert plan is not None
    query = odbc_reader.query_and_parameters(plan.statement, postgresql.dialect(paramstyle="qmark"))
    assert query is not None
    sql, parameters = query
    frames = list(
        odbc_reader.batches(
            lambda: arrow_odbc.connect(psqlodbc_connection_string(url)),
            sql,
            parameters,
            plan,
            schema=schema,
            table="edge",
            batch_size=batch_size,
        )
    )
    return frames


def test_edge_values_round_trip_through_arrow_odbc(edge_source):
    url, table = edge_source
    frames = _read(url, _select(table), SCHEMA)
    assert [f.height for f in frames] == [2, 2, 1], "batches of at most batch_size rows"
    assert all(f.schema == pl.Schema(SCHEMA) for f in frames)
    got = pl.concat(frames).rows(named=True)
    expected = _edge_rows()
    for row in expected:  # the row path's text for these two: lower-case UUIDs, PostgreSQL's numeric text
        row["loose"] = (
            None if row["loose"] is None else str(row["loose"]).replace("1E+20", "100000000000000000000")
        )
    assert math.copysign(1.0, got[0]["ratio"]) == -1.0, "negative zero kept its sign"
    assert got == expected
    assert got[3]["body"] == LONG_TEXT and got[0]["body"] == "" and got[1]["body"] is None
    assert got[0]["ident"] == str(uuid.UUID(int=2**100 + 1)), "upper-case SQL_GUID text lowercased"


def test_parameters_integers_as_literals_and_ascii_text_bound(edge_source):
    url, table = edge_source
    statement = _select(table).where(sa.or_(table.c.id.in_([2, 4]), table.c.short == "abc"))
    plan = odbc_reader.read_plan(statement, SCHEMA)
    sql, parameters = odbc_reader.query_and_parameters(plan.statement, postgresql.dialect(paramstyle="qmark"))
    assert "edge.id IN (2, 4)" in sql and "edge.short = ?" in sql
    assert parameters == ["abc"]
    frames = _read(url, statement, SCHEMA, batch_size=100)
    assert pl.concat(frames)["id"].to_list() == [2, 4, 5]


def test_a_value_that_does_not_fit_the_batch_schema_names_table_column_and_value(edge_source):
    url, table = edge_source
    statement = sa.select(table.c.id.label("id"), table.c.small.label("small")).order_by(table.c.id)
    with pytest.raises(
        DataError, match=r"table 'edge': column 'small': source value -32768 cannot be read as Int8"
    ):
        _read(url, statement, {"id": pl.Int64(), "small": pl.Int8()})


def test_closing_early_frees_the_statement(edge_source):
    url, table = edge_source
    plan = odbc_reader.read_plan(_select(table), SCHEMA)
    sql, parameters = odbc_reader.query_and_parameters(plan.statement, postgresql.dialect(paramstyle="qmark"))
    batches = odbc_reader.batches(
        lambda: arrow_odbc.connect(psqlodbc_connection_string(url)),
        sql,
        parameters,
        plan,
        schema=SCHEMA,
        table="edge",
        batch_size=1,
    )
    assert next(batches).height == 1
    batches.close()
    admin = sa.create_engine(url)
    with admin.connect() as conn:
        active = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    admin.dispose()
    assert active == 0, "the reader's connection went with the generator"


# -- what goes to the row path, and the SQL sent ---------------------------------------------------


def _mssql_table() -> sa.Table:
    return sa.Table(
        "F4801",
        sa.MetaData(),
        sa.Column("WADOCO", sa.Integer, primary_key=True),
        sa.Column("WADL01", mssql.NCHAR(30)),
        sa.Column("WAUPMJ", mssql.NUMERIC(6, 0)),
        sa.Column("WAGUID", mssql.UNIQUEIDENTIFIER),
        sa.Column("WAMEMO", mssql.NVARCHAR(None)),
        sa.Column("WAZONED", mssql.DATETIMEOFFSET),
        sa.Column("WAAT", mssql.DATETIME2(6)),
        schema="PRODDTA",
    )


def test_mssql_statement_compiles_with_uuids_read_as_themselves_and_integer_literals():
    table = _mssql_table()
    statement = sa.select(
        table.c.WADOCO.label("order_number"),
        table.c.WADL01.label("description"),
        sa.cast(table.c.WAGUID, mssql.NVARCHAR()).label("guid"),
        sa.cast(table.c.WAUPMJ, mssql.NVARCHAR()).label("updated_julian"),
    ).where(table.c.WADOCO.in_([7, 8]), table.c.WADL01.in_(["A", "B"]))
    schema = {
        "order_number": pl.Int32(),
        "description": pl.String(),
        "guid": pl.String(),
        "updated_julian": pl.String(),
    }
    plan = odbc_reader.read_plan(statement, schema)
    assert plan is not None
    assert plan.uuids == {"guid"}
    assert plan.max_text_size == 120 and plan.max_binary_size is None, (
        "NCHAR(30) in UTF-8, above the cast's 64"
    )
    assert [str(f.type) for f in plan.arrow_schema] == ["int32", "string", "string", "string"]
    sql, parameters = odbc_reader.query_and_parameters(plan.statement, get_engine_dialect("mssql"))
    assert sql == (
        "SELECT [PRODDTA].[F4801].[WADOCO] AS order_number, [PRODDTA].[F4801].[WADL01] AS description, "
        "[PRODDTA].[F4801].[WAGUID] AS guid, CAST([PRODDTA].[F4801].[WAUPMJ] AS NVARCHAR(max)) AS updated_julian \n"
        "FROM [PRODDTA].[F4801] \n"
        "WHERE [PRODDTA].[F4801].[WADOCO] IN (7, 8) AND [PRODDTA].[F4801].[WADL01] IN (?, ?)"
    )
    assert parameters == ["A", "B"]


@pytest.mark.parametrize(
    ("column", "dtype"),
    [
        ("WAMEMO", pl.String()),  # NVARCHAR(max): buffers sized by the longest possible value
        ("WAZONED", pl.Datetime("us", "UTC")),  # the ODBC timestamp struct has no offset
        ("WAAT", pl.Object()),  # no C type for it
    ],
)
def test_columns_without_an_exact_fetch_go_to_rows(column, dtype):
    table = _mssql_table()
    statement = sa.select(table.c.WADOCO.label("id"), table.c[column].label("value"))
    assert odbc_reader.read_plan(statement, {"id": pl.Int32(), "value": dtype}) is None


@pytest.mark.parametrize(
    "value",
    [datetime(2026, 3, 1, 8, 0, 0, 123456), Decimal("1.5"), "Zürich", True, 1.5],
    ids=["datetime", "decimal", "non-ascii", "bool", "float"],
)
def test_parameters_that_need_their_own_type_go_to_rows(value):
    table = _mssql_table()
    statement = sa.select(table.c.WADOCO.label("id")).where(sa.bindparam("low", value) < table.c.WAAT)
    plan = odbc_reader.read_plan(statement, {"id": pl.Int32()})
    assert plan is not None
    assert odbc_reader.query_and_parameters(plan.statement, get_engine_dialect("mssql")) is None


def get_engine_dialect(kind: str) -> sa.Dialect:
    return sa.create_engine(sa.URL.create(f"{kind}+pyodbc", host="h", database="d")).dialect


# -- connecting, errors and the opt-in ---------------------------------------------------------------


def _freetds():
    pyodbc = pytest.importorskip("pyodbc", reason="pyodbc not installed")
    if "FreeTDS" not in pyodbc.drivers():
        pytest.skip("FreeTDS not installed: apt-get install unixodbc tdsodbc")


def _source(kind: str, port: int, tds_version: str) -> SqlDatabase:
    url = sa.URL.create(
        f"{kind}+pyodbc",
        username="sync",
        password="s3cret-pw",
        host="127.0.0.1",
        port=port,
        database="erp",
        query={"driver": "FreeTDS", "TDS_Version": tds_version},
    )
    return SqlDatabase(
        name="erp", url=url.render_as_string(hide_password=False), arrow_odbc=True, connect_timeout=2
    )


@pytest.mark.parametrize(
    ("kind", "tds_version", "number", "text"),
    [("sybase", "5.0", 4002, "Login failed."), ("mssql", "7.4", 18456, "Login failed for user 'sync'.")],
    ids=["ase", "mssql"],
)
def test_a_refused_login_through_arrow_odbc_is_permanent(kind, tds_version, number, text):
    """The reader's own connection, from the engine's URL and options, through the real FreeTDS."""
    _freetds()
    with (
        refusing_tds_server([ServerMessage(number, text)], tds_version=tds_version) as port,
        _source(kind, port, tds_version).engine(role="source") as (engine, dialect),
    ):
        settings = engine.get_execution_options()[odbc_reader.OPTION]
        assert settings == odbc_reader.Reading(login_timeout=2, keywords={"APP": "sync_assets source"})
        assert odbc_reader.connection_string(engine, settings).endswith(";APP=sync_assets source")
        with pytest.raises(arrow_odbc.Error) as caught:
            odbc_reader._connect(engine, settings)
    assert dialect.is_permanent(caught.value) and not dialect.is_transient(caught.value)
    assert "s3cret-pw" not in str(caught.value)


def test_a_refused_connection_through_arrow_odbc_is_transient():
    _freetds()
    with (
        _source("sybase", free_port(), "5.0").engine(role="source") as (engine, dialect),
        pytest.raises(arrow_odbc.Error) as caught,
    ):
        odbc_reader._connect(engine, engine.get_execution_options()[odbc_reader.OPTION])
    assert dialect.is_transient(caught.value) and not dialect.is_permanent(caught.value)


def test_arrow_odbc_is_refused_on_a_url_it_cannot_read(tmp_path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "connections:\n"
        "  erp: {url: 'postgresql+psycopg://u@h/db', arrow_odbc: true}\n"
        f"  cache: {{url: 'sqlite:///{tmp_path / 'c.sqlite'}'}}\n"
        "cache: cache\n"
        "tables: []\n"
    )
    with pytest.raises(
        CatalogError, match=r"arrow_odbc reads SQL Server and SAP ASE over pyodbc, not postgresql\+psycopg"
    ):
        load_catalog(catalog)
    resource = SqlDatabase(name="erp", url=f"sqlite:///{tmp_path / 's.sqlite'}", arrow_odbc=True)
    with (
        pytest.raises(
            SyncError,
            match="connection 'erp': arrow_odbc reads SQL Server and SAP ASE over pyodbc, not sqlite",
        ),
        resource.engine(role="source"),
    ):
        pass


def test_without_the_option_the_dialects_read_rows():
    """No execution option, no reader: arrow_batches answers None before touching the connection."""
    table = _mssql_table()
    statement = sa.select(table.c.WADOCO.label("id"))

    class Unconnected:
        def get_execution_options(self):
            return {}

    for kind in ("sybase", "mssql"):
        dialect = get_dialect(kind)
        assert dialect.capabilities.independent_reader
    assert (
        odbc_reader.arrow_batches(
            Unconnected(), statement, schema={"id": pl.Int32()}, table="t", batch_size=10
        )  # type: ignore[arg-type]
        is None
    )


@pytest.mark.parametrize(
    ("column_type", "wanted", "fetched"),
    [
        (mssql.TINYINT(), pl.Int16(), "int32"),  # 0..255: one size up, the cast range-checks
        (sa.SmallInteger(), pl.Int16(), "int16"),
        (mssql.REAL(), pl.Float64(), "float"),
        (sa.Double(), pl.Float32(), None),  # a double into 32 bits would round
        (sa.Numeric(15, 4), pl.Decimal(15, 4), "decimal128(15, 4)"),
        (sa.Numeric(15, 4), pl.Decimal(15, 2), None),  # fewer fractional digits would round
        (sa.Numeric(15, 4), pl.Decimal(12, 4), None),  # fewer integer digits would overflow
        (sa.Numeric(9, 0), pl.Int64(), "decimal128(9, 0)"),
        (sa.Numeric(9, 2), pl.Int64(), None),
        (mssql.DATETIME2(7), pl.Datetime("us"), "timestamp[us]"),
        (mssql.DATETIMEOFFSET(7), pl.Datetime("us"), None),
        (mssql.TIME(7), pl.Time(), "time64[ns]"),  # cut to microseconds by typed_batch
        (mssql.NCHAR(30), pl.String(), "string"),
        (mssql.VARBINARY(16), pl.Binary(), "binary"),
        (mssql.VARBINARY(None), pl.Binary(), None),  # VARBINARY(max)
        (mssql.SQL_VARIANT(), pl.String(), None),
    ],
)
def test_each_sql_type_is_fetched_as_a_type_that_holds_all_its_values(column_type, wanted, fetched):
    column = sa.Column("c", column_type)
    sa.Table("t", sa.MetaData(), column)
    plan = odbc_reader.read_plan(sa.select(column.label("c")), {"c": wanted})
    assert (None if plan is None else str(plan.arrow_schema.field("c").type)) == fetched


def test_ase_unsigned_integers_are_fetched_one_size_up_or_read_as_rows():
    pytest.importorskip("sqlalchemy_sybase", reason="sqlalchemy-sybase not installed")
    from sync_assets.dialects import sybase

    cases = [
        (sybase.UNSIGNED_SMALLINT(), pl.Int32(), "int32"),
        (sybase.UNSIGNED_INT(), pl.Int64(), "int64"),
        (sybase.UNSIGNED_BIGINT(), pl.Decimal(20, 0), None),  # 0..2^64-1 fits no signed integer
    ]
    for column_type, wanted, fetched in cases:
        column = sa.Column("c", column_type)
        sa.Table("t", sa.MetaData(), column)
        plan = odbc_reader.read_plan(sa.select(column.label("c")), {"c": wanted})
        assert (None if plan is None else str(plan.arrow_schema.field("c").type)) == fetched, column_type
