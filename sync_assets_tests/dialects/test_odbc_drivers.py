"""odbc.py against real ODBC drivers: psqlODBC for loading, FreeTDS for error classification and
timeouts (against a TDS peer that refuses logins, and a server that never answers)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sync_assets.dialects import get_dialect, odbc
from sync_assets.dialects.base import Timeouts
from sync_assets.dialects.deadline import LoginTimeout
from sync_assets_tests.helpers import PSQLODBC, free_port, psqlodbc_connection_string, silent_server
from sync_assets_tests.tds import ServerMessage, refusing_tds_server

INSTALL_HINT = "apt-get install unixodbc odbc-postgresql"
MAX_DECIMAL = Decimal("9999999999999999999999999999.9999999999")
TIMEOUTS = Timeouts(connect=2, keepalive=60)


def _pyodbc():
    try:
        import pyodbc
    except ImportError:
        pytest.skip(f"psqlODBC not installed: {INSTALL_HINT}")
    return pyodbc


def _connect_psqlodbc(url: sa.URL):
    pyodbc = _pyodbc()
    if PSQLODBC not in pyodbc.drivers():
        pytest.skip(f"psqlODBC not installed: {INSTALL_HINT}")
    return pyodbc.connect(psqlodbc_connection_string(url), autocommit=False)


def _edge_table() -> sa.Table:
    return sa.Table(
        "edge",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("small", sa.SmallInteger),
        sa.Column("text", sa.UnicodeText),
        sa.Column("short", sa.Unicode(12)),
        sa.Column("amount", sa.Numeric(38, 10)),
        sa.Column("ratio", sa.Double),
        sa.Column("flag", sa.Boolean),
        sa.Column("day", sa.Date),
        sa.Column("at", postgresql.TIMESTAMP(precision=6)),
        sa.Column("at_ns", postgresql.TIMESTAMP(precision=6)),
        sa.Column("zoned", postgresql.TIMESTAMP(timezone=True, precision=6)),
        sa.Column("clock", postgresql.TIME(precision=6)),
        sa.Column("blob", postgresql.BYTEA),
        sa.Column("ident", sa.Uuid(as_uuid=False)),
    )


def _edge_frame() -> pl.DataFrame:
    long_text = "x" * 200_000 + "🚀"
    return pl.DataFrame(
        {
            "id": [1, 2, 3, 4, 5],
            "small": [-32768, 32767, None, 0, 1],
            "text": ["", None, "東京 🚀 Zürich 𝄞", long_text, 'O\'Brien "q", comma\n\ttab\\'],
            "short": ["", None, "🚀🚀🚀", "abc", "naïve"],
            "amount": [MAX_DECIMAL, -MAX_DECIMAL, Decimal("-0E-10"), None, Decimal("0.0000000001")],
            "ratio": [-0.0, None, 1.7976931348623157e308, 5e-324, 0.1],
            "flag": [True, False, None, True, False],
            "day": [date(1900, 1, 1), date(9999, 12, 31), None, date(2026, 3, 1), date(1970, 1, 1)],
            "at": [
                datetime(1900, 1, 1),
                datetime(9999, 12, 31, 23, 59, 59, 999999),
                None,
                datetime(2026, 3, 1, 8, 0, 0, 123456),
                datetime(1970, 1, 1, 0, 0, 0, 1),
            ],
            "at_ns": [datetime(2026, 3, 1, 8, 0, 0, 123456), None, None, datetime(1900, 1, 1), None],
            "zoned": [
                datetime(1900, 1, 1, tzinfo=UTC),
                datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                None,
                datetime(2026, 3, 1, 8, 0, 0, 654321, tzinfo=UTC),
                datetime(1970, 1, 1, tzinfo=UTC),
            ],
            "clock": [time(0, 0), time(23, 59, 59, 999999), None, time(12, 0, 0, 1), time(8, 30)],
            "blob": [b"", None, bytes(range(256)) * 400, b"\x00", b"\xff\x00\xfe"],
            "ident": [str(uuid.UUID(int=i * 2**100 + i)) if i != 3 else None for i in range(1, 6)],
        },
        schema_overrides={
            "small": pl.Int16,
            "amount": pl.Decimal(38, 10),
            "at": pl.Datetime("us"),
            "at_ns": pl.Datetime("ns"),
            "zoned": pl.Datetime("us", "UTC"),
        },
    ).with_columns(
        # 789 ns more than the microsecond: only text keeps them, PostgreSQL keeps 6 digits.
        pl.col("at_ns") + pl.duration(nanoseconds=789)
    )


def test_executemany_loads_edge_values_exactly_through_psqlodbc(make_pg_database):
    url = make_pg_database()
    table = _edge_table()
    engine = sa.create_engine(url)
    table.create(engine)
    frame = _edge_frame()
    connection = _connect_psqlodbc(url)
    statement = str(sa.insert(table).compile(dialect=postgresql.dialect(paramstyle="qmark")))
    cursor = connection.cursor()
    try:
        # Three rows per call: several fast_executemany calls, and rows with NULLs first.
        loaded = odbc.executemany(
            cursor, statement, frame, {c.name: c.type for c in table.columns}, max_rows=3
        )
        connection.commit()
    finally:
        cursor.close()
        connection.close()
    assert loaded == 5

    with engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]
    engine.dispose()
    expected = frame.with_columns(pl.col("at_ns").dt.truncate("1us").cast(pl.Datetime("us"))).rows()
    assert stored == expected
    assert math.copysign(1.0, stored[0][5]) == -1.0, "negative zero kept its sign"
    assert stored[3][2] == "x" * 200_000 + "🚀" and stored[0][2] == "" and stored[1][2] is None
    assert stored[0][12] == b"" and stored[1][12] is None


def test_large_batch_is_split_within_the_byte_budget(make_pg_database):
    url = make_pg_database()
    table = sa.Table("wide", sa.MetaData(), sa.Column("id", sa.BigInteger), sa.Column("body", sa.UnicodeText))
    engine = sa.create_engine(url)
    table.create(engine)
    frame = pl.DataFrame({"id": range(2_000), "body": [f"row {i} " + "é" * (i % 700) for i in range(2_000)]})
    values = odbc.to_parameters(frame, {})
    sizes = odbc.input_sizes(values, {})
    assert sizes == [odbc.InputSize(odbc.SQL_BIGINT, 0), odbc.InputSize(odbc.SQL_WVARCHAR, 1407)]
    assert odbc.rows_per_call(sizes, max_rows=10_000, max_bytes=1 << 20) == 365
    connection = _connect_psqlodbc(url)
    cursor = connection.cursor()
    try:
        odbc.executemany(cursor, "INSERT INTO wide (id, body) VALUES (?, ?)", frame, {}, max_bytes=1 << 20)
        connection.commit()
    finally:
        cursor.close()
        connection.close()
    with engine.connect() as conn:
        stored = conn.execute(sa.select(table).order_by(table.c.id)).all()
    engine.dispose()
    assert [tuple(r) for r in stored] == frame.rows()


def test_connection_refused_through_freetds_is_transient():
    """A real driver error (FreeTDS, nothing listening), classified by the mssql dialect."""
    pyodbc = _pyodbc()
    if "FreeTDS" not in pyodbc.drivers():
        pytest.skip("FreeTDS not installed: apt-get install unixodbc tdsodbc")
    port = free_port()
    url = sa.URL.create(
        "mssql+pyodbc",
        username="sa",
        password="secret",
        host="127.0.0.1",
        port=port,
        database="master",
        query={"driver": "FreeTDS", "TDS_Version": "7.4"},
    )
    engine = sa.create_engine(url)
    with pytest.raises(sa.exc.DBAPIError) as caught:
        engine.connect()
    engine.dispose()
    dialect = get_dialect("mssql")
    assert caught.value.orig.args[0].startswith("08")
    assert dialect.is_transient(caught.value)
    assert dialect.is_transient(caught.value.orig)


def _freetds():
    pyodbc = _pyodbc()
    if "FreeTDS" not in pyodbc.drivers():
        pytest.skip("FreeTDS not installed: apt-get install unixodbc tdsodbc")
    return pyodbc


def _refused_login(kind: str, messages: list[ServerMessage]) -> sa.exc.DBAPIError:
    """The error the real FreeTDS driver raises when the server refuses the login with `messages`,
    through an engine made with the dialect's own options (login timeout, APP)."""
    _freetds()
    tds_version = "7.4" if kind == "mssql" else "5.0"
    dialect = get_dialect(kind)
    with refusing_tds_server(messages, tds_version=tds_version) as port:
        url = sa.URL.create(
            f"{kind}+pyodbc",
            username="sync",
            password="secret",
            host="127.0.0.1",
            port=port,
            database="erp",
            query={"driver": "FreeTDS", "TDS_Version": tds_version},
        )
        engine = sa.create_engine(url, **dialect.engine_options(url, role="source", timeouts=TIMEOUTS))
        dialect.prepare_engine(engine, role="source")
        try:
            with pytest.raises(sa.exc.DBAPIError) as caught:
                engine.connect()
        finally:
            engine.dispose()
    return caught.value


@pytest.mark.parametrize(
    ("kind", "number", "text"),
    [
        ("mssql", 18456, "Login failed for user 'sync'."),
        ("mssql", 18486, "Login failed for user 'sync' because the account is currently locked out."),
        ("mssql", 18487, "Login failed for user 'sync'. Reason: The password of the account has expired."),
        ("sybase", 4002, "Login failed."),
    ],
    ids=["mssql-login-failed", "mssql-locked-out", "mssql-password-expired", "ase-login-failed"],
)
def test_a_refused_login_through_freetds_is_permanent(kind, number, text):
    """A wrong password must fail once: retrying it locks service accounts (sync_assets issue 10)."""
    error = _refused_login(kind, [ServerMessage(number, text)])
    assert f"({number})" in str(error.orig)
    dialect = get_dialect(kind)
    assert dialect.is_permanent(error) and not dialect.is_transient(error)


def test_azure_database_unavailable_sent_with_login_failed_stays_transient():
    """Azure SQL refuses logins to a database that fails over with 40613 and 18456 together."""
    error = _refused_login(
        "mssql",
        [
            ServerMessage(40613, "Database 'erp' on server 'x' is not currently available.", severity=17),
            ServerMessage(18456, "Login failed for user 'sync'."),
        ],
    )
    assert "(40613)" in str(error.orig)
    assert get_dialect("mssql").is_transient(error)


@pytest.mark.parametrize("kind", ["mssql", "sybase"])
def test_a_server_that_never_answers_the_login_times_out_as_transient(kind):
    """The login timeout reaches FreeTDS; over TDS 5.0 FreeTDS then waits for ever on its logout,
    which the dialect's own deadline ends (dialects/deadline.py)."""
    _freetds()
    dialect = get_dialect(kind)
    tds_version = "7.4" if kind == "mssql" else "5.0"
    with silent_server() as port:
        url = sa.make_url(
            f"{kind}+pyodbc://sync:secret@127.0.0.1:{port}/erp?driver=FreeTDS&TDS_Version={tds_version}"
        )
        engine = sa.create_engine(url, **dialect.engine_options(url, role="source", timeouts=TIMEOUTS))
        dialect.prepare_engine(engine, role="source")
        try:
            with pytest.raises((sa.exc.DBAPIError, LoginTimeout)) as caught:
                engine.connect()
        finally:
            engine.dispose()
    assert dialect.is_transient(caught.value) and not dialect.is_permanent(caught.value)
