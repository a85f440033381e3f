"""Oracle as a source, without a server: the exact SQL, the type mapping and error classification."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import oracledb
import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy as sa
from oracledb.errors import _Error
from sqlalchemy.dialects import oracle

from sync_assets.catalog.models import TableSpec
from sync_assets.dialects import get_dialect
from sync_assets.dialects.base import Timeouts
from sync_assets.dialects.deadline import LoginTimeout
from sync_assets.dialects.oracle import (
    Timestamp,
    _case_insensitive,
    arrow_schema,
    exact_type,
    fractional_digits_query,
    timestamp_bounds,
)
from sync_assets.errors import ColumnNotFound, UnsupportedType
from sync_assets.sources.sql import SqlTable, _check_columns, source_columns
from sync_assets.types import ColumnType, Kind, polars_dtype
from sync_assets_tests.helpers import free_port, silent_server

DIALECT = get_dialect("oracle")
ORACLE = oracle.dialect()


def sql(statement: sa.ClauseElement) -> str:
    return str(statement.compile(dialect=ORACLE))


def f4801() -> sa.Table:
    """F4801 as SQLAlchemy reflects it: case-insensitive names in lower case, JDE's bare NUMBERs."""
    return sa.Table(
        "f4801",
        sa.MetaData(),
        sa.Column("wadoco", oracle.NUMBER(asdecimal=True)),
        sa.Column("wadl01", oracle.NCHAR(30)),
        sa.Column("waupmj", oracle.NUMBER(6, 0)),
        sa.Column("wauorg", oracle.NUMBER(15, 2, asdecimal=True)),
        sa.Column("created", oracle.DATE()),
        sa.Column("changed", Timestamp(9)),
        sa.Column("seen_at", oracle.TIMESTAMP(timezone=True)),
        schema="proddta",
    )


def source(**spec: object) -> SqlTable:
    table = TableSpec(name="work_orders", source="jde", source_table="F4801", source_schema="PRODDTA", **spec)
    built = SqlTable(table, source_columns(table, f4801(), DIALECT, typed=True))
    _check_columns(built)
    return built


def test_upper_case_catalog_names_match_reflected_lower_case_columns():
    built = source(primary_key=["WADOCO"], updated_at="changed_at", columns={"CHANGED": "changed_at"})
    assert [(c.source_name, c.name) for c in built.columns] == [
        ("WADOCO", "WADOCO"),
        ("WADL01", "WADL01"),
        ("WAUPMJ", "WAUPMJ"),
        ("WAUORG", "WAUORG"),
        ("CREATED", "CREATED"),
        ("CHANGED", "changed_at"),
        ("SEEN_AT", "SEEN_AT"),
    ]


def test_a_lower_case_catalog_column_is_reported_with_oracles_names():
    with pytest.raises(ColumnNotFound, match=r"primary key column 'wadoco' is not in the source.*WADOCO"):
        source(primary_key=["wadoco"])


def test_select_with_watermark_bounds_reads_bare_numbers_as_text_and_zoned_timestamps_as_utc():
    built = source(primary_key=["WADOCO"], updated_at="CHANGED")
    statement = built.select(low=datetime(2026, 3, 1, 8, 0, 0, 123456), high=datetime(2026, 3, 2))
    assert sql(statement) == (
        'SELECT TO_CHAR(proddta.f4801.wadoco) AS "WADOCO", proddta.f4801.wadl01 AS "WADL01", '
        'proddta.f4801.waupmj AS "WAUPMJ", proddta.f4801.wauorg AS "WAUORG", '
        'proddta.f4801.created AS "CREATED", proddta.f4801.changed AS "CHANGED", '
        'sys_extract_utc(proddta.f4801.seen_at) AS "SEEN_AT" \n'
        "FROM proddta.f4801 \n"
        "WHERE proddta.f4801.changed >= :changed_1 AND proddta.f4801.changed <= :changed_2"
    )


def test_arrow_path_binds_timestamp_bounds_as_text_with_their_microseconds():
    built = source(primary_key=["WADOCO"], updated_at="CHANGED")
    statement = built.select(low=datetime(2026, 3, 1, 8, 0, 0, 123456), high=datetime(2026, 3, 2))
    compiled = timestamp_bounds(statement).compile(dialect=ORACLE)
    assert compiled.string.endswith(
        "WHERE proddta.f4801.changed >= to_timestamp(:changed_1, :param_1) "
        "AND proddta.f4801.changed <= to_timestamp(:changed_2, :param_2)"
    )
    assert compiled.construct_params(escape_names=True) == {
        "changed_1": "2026-03-01 08:00:00.123456",
        "param_1": "YYYY-MM-DD HH24:MI:SS.FF6",
        "changed_2": "2026-03-02 00:00:00.000000",
        "param_2": "YYYY-MM-DD HH24:MI:SS.FF6",
    }


def test_number_watermark_compares_on_the_raw_column_not_its_text():
    built = source(primary_key=["WADOCO"], updated_at="WADOCO")
    statement = built.select(low=Decimal("100"), high=Decimal("250"))
    assert sql(statement).endswith(
        "WHERE proddta.f4801.wadoco >= :wadoco_1 AND proddta.f4801.wadoco <= :wadoco_2"
    )
    assert sql(built.max_watermark()) == "SELECT max(proddta.f4801.wadoco) AS max_1 \nFROM proddta.f4801"
    # The Arrow path leaves non-datetime bounds alone.
    assert timestamp_bounds(statement).compile(dialect=ORACLE).construct_params() == {
        "wadoco_1": Decimal("100"),
        "wadoco_2": Decimal("250"),
    }


def test_zoned_watermark_is_compared_and_maximised_in_utc():
    built = source(primary_key=["WADOCO"], updated_at="SEEN_AT")
    assert sql(built.max_watermark()) == (
        "SELECT max(sys_extract_utc(proddta.f4801.seen_at)) AS max_1 \nFROM proddta.f4801"
    )
    assert sql(built.select(low=datetime(2026, 3, 1))).endswith(
        "WHERE sys_extract_utc(proddta.f4801.seen_at) >= :sys_extract_utc_1"
    )
    # The stored watermark of a zoned column is aware: the Arrow path binds it as UTC wall time.
    berlin = timezone(timedelta(hours=2))
    statement = built.select(low=datetime(2026, 3, 1, 10, 0, 0, 5, tzinfo=berlin))
    params = timestamp_bounds(statement).compile(dialect=ORACLE).construct_params(escape_names=True)
    assert "2026-03-01 08:00:00.000005" in params.values()


def test_upper_case_table_and_schema_names_compile_as_case_insensitive_names():
    # What reflect_table() hands SQLAlchemy for `source_table: F4801, source_schema: PRODDTA`.
    assert (_case_insensitive(ORACLE, "F4801"), _case_insensitive(ORACLE, "PRODDTA")) == ("f4801", "proddta")
    assert _case_insensitive(ORACLE, "f4801") == "f4801"
    assert _case_insensitive(ORACLE, "MixedCase") == "MixedCase"  # a quoted, case-sensitive name
    # SQLAlchemy itself keeps "F4801" as given and would look the reflected f4801 up under it.
    upper = sa.Table("F4801", sa.MetaData(), sa.Column("wadoco", oracle.NUMBER()), schema="PRODDTA")
    assert sql(sa.select(upper)) == 'SELECT "PRODDTA"."F4801".wadoco \nFROM "PRODDTA"."F4801"'


def test_fractional_digits_come_from_the_data_dictionary():
    query = fractional_digits_query(ORACLE, f4801())
    assert sql(query) == (
        "SELECT all_tab_cols.column_name, all_tab_cols.data_scale \n"
        "FROM all_tab_cols \n"
        "WHERE all_tab_cols.owner = :owner_1 AND all_tab_cols.table_name = :table_name_1 "
        "AND all_tab_cols.data_type LIKE :data_type_1"
    )
    assert query.compile(dialect=ORACLE).params == {
        "owner_1": "PRODDTA",
        "table_name_1": "F4801",
        "data_type_1": "TIMESTAMP%",
    }


def test_reflected_types_are_made_exact():
    bare = exact_type(oracle.NUMBER(), None)
    assert isinstance(bare, oracle.NUMBER) and bare.asdecimal  # max(NUMBER) comes back as Decimal
    assert exact_type(oracle.NUMBER(10, 2), None).asdecimal
    whole = oracle.NUMBER(6, 0)
    assert exact_type(whole, None) is whole
    stamp = exact_type(oracle.TIMESTAMP(timezone=True), 3)
    assert isinstance(stamp, Timestamp) and stamp.precision == 3 and stamp.timezone
    plain = oracle.TIMESTAMP()
    assert exact_type(plain, None) is plain


ORACLE_TYPES = [
    (oracle.NUMBER(), ColumnType(Kind.DECIMAL)),
    (oracle.NUMBER(38, 10), ColumnType(Kind.DECIMAL, precision=38, scale=10)),
    (oracle.NUMBER(15, 2), ColumnType(Kind.DECIMAL, precision=15, scale=2)),
    (oracle.NUMBER(4, 0), ColumnType(Kind.INTEGER, bits=16)),
    (oracle.NUMBER(9, 0), ColumnType(Kind.INTEGER, bits=32)),
    (oracle.NUMBER(18, 0), ColumnType(Kind.INTEGER, bits=64)),
    (oracle.NUMBER(19, 0), ColumnType(Kind.DECIMAL, precision=19, scale=0)),
    (oracle.NUMBER(5, -2), ColumnType(Kind.DECIMAL, precision=7, scale=0)),
    (oracle.NUMBER(3, 5), ColumnType(Kind.DECIMAL, precision=5, scale=5)),
    (sa.INTEGER(), ColumnType(Kind.DECIMAL, precision=38, scale=0)),  # NUMBER(*,0)
    (oracle.FLOAT(binary_precision=50), ColumnType(Kind.DECIMAL)),
    (oracle.DOUBLE_PRECISION(), ColumnType(Kind.DECIMAL)),  # FLOAT(126)
    (oracle.REAL(), ColumnType(Kind.DECIMAL)),  # FLOAT(63)
    (oracle.BINARY_FLOAT(), ColumnType(Kind.FLOAT)),
    (oracle.BINARY_DOUBLE(), ColumnType(Kind.FLOAT)),
    (oracle.DATE(), ColumnType(Kind.DATETIME, precision=0)),
    (oracle.TIMESTAMP(), ColumnType(Kind.DATETIME, precision=6)),
    (Timestamp(9), ColumnType(Kind.DATETIME, precision=9)),
    (Timestamp(0), ColumnType(Kind.DATETIME, precision=0)),
    (Timestamp(6, timezone=True), ColumnType(Kind.DATETIME, precision=6, timezone=True)),
    (oracle.TIMESTAMP(local_timezone=True), ColumnType(Kind.DATETIME, precision=6, timezone=True)),
    (oracle.CHAR(3), ColumnType(Kind.STRING, length=3)),
    (oracle.NCHAR(30), ColumnType(Kind.STRING, length=30)),
    (oracle.VARCHAR2(40), ColumnType(Kind.STRING, length=40)),
    (oracle.NVARCHAR2(40), ColumnType(Kind.STRING, length=40)),
    (oracle.CLOB(), ColumnType(Kind.STRING)),
    (oracle.NCLOB(), ColumnType(Kind.STRING)),
    (oracle.RAW(16), ColumnType(Kind.BINARY, length=16)),
    (oracle.BLOB(), ColumnType(Kind.BINARY)),
    (oracle.BOOLEAN(), ColumnType(Kind.BOOLEAN)),
]


@pytest.mark.parametrize(("type_", "expected"), ORACLE_TYPES, ids=[repr(t) for t, _ in ORACLE_TYPES])
def test_oracle_type_mapping(type_, expected):
    assert DIALECT.source_type(type_, table="t", column="c") == expected


def test_timestamp_9_travels_in_nanoseconds_and_date_in_microseconds():
    assert polars_dtype(DIALECT.source_type(Timestamp(9), table="t", column="c")) == pl.Datetime("ns")
    assert polars_dtype(DIALECT.source_type(oracle.DATE(), table="t", column="c")) == pl.Datetime("us")


REFUSED = [
    (oracle.INTERVAL(), "INTERVAL"),
    (oracle.ROWID(), "ROWID"),
    (oracle.BFILE(), "BFILE"),
    (sa.types.NULLTYPE, "does not recognise"),  # XMLTYPE, UROWID: reflection warns and gives NullType
]


@pytest.mark.parametrize(("type_", "named"), REFUSED, ids=[n for _, n in REFUSED])
def test_types_without_an_exact_mapping_are_refused(type_, named):
    with pytest.raises(UnsupportedType, match=f"column 'c' has type .*{named}"):
        DIALECT.source_type(type_, table="t", column="c")


def test_arrow_request_names_every_column_with_an_exact_type():
    built = source(primary_key=["WADOCO"], updated_at="CHANGED")
    assert arrow_schema(built.schema()) == pa.schema(
        [
            ("WADOCO", pa.large_string()),
            ("WADL01", pa.large_string()),
            ("WAUPMJ", pa.int32()),
            ("WAUORG", pa.decimal128(15, 2)),
            ("CREATED", pa.timestamp("us")),
            ("CHANGED", pa.timestamp("ns")),
            ("SEEN_AT", pa.timestamp("us")),
        ]
    )
    assert arrow_schema({"x": pl.List(pl.Int64)}) is None  # no mapping: the SQLAlchemy path reads it


def error(message: str, code: int = 0) -> oracledb.DatabaseError:
    return oracledb.DatabaseError(_Error(message, code=code))


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("ORA-00060: deadlock detected while waiting for resource", 60),
        ("ORA-08177: can't serialize access for this transaction", 8177),
        ("ORA-00054: resource busy and acquire with NOWAIT specified", 54),
        ("ORA-03113: end-of-file on communication channel", 3113),
        ("ORA-12514: TNS:listener does not currently know of service", 12514),
        ("ORA-12541: TNS:no listener", 12541),
        ("ORA-01033: ORACLE initialization or shutdown in progress", 1033),
        ("ORA-01555: snapshot too old", 1555),
        ("ORA-25408: can not safely replay call", 25408),
        ("DPY-4011: the database or network closed the connection", 0),
        ("DPY-6005: cannot connect to database", 0),
    ],
)
def test_transient_oracle_errors(message, code):
    err = error(message, code)
    assert DIALECT.is_transient(err)
    assert DIALECT.is_transient(sa.exc.OperationalError("SELECT 1", {}, err))


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("ORA-00942: table or view does not exist", 942),
        ("ORA-01722: invalid number", 1722),
    ],
)
def test_permanent_oracle_errors(message, code):
    err = sa.exc.DatabaseError("SELECT 1", {}, error(message, code))
    assert not DIALECT.is_transient(err) and not DIALECT.is_permanent(err)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("ORA-01017: invalid credential or not authorized; logon denied", 1017),
        ("ORA-28000: The account is locked.", 28000),
        ("ORA-28001: the password has expired", 28001),
        ("ORA-01045: Login denied. User JDE lacks CREATE SESSION privilege.", 1045),
        ("ORA-01005: null password given; logon denied", 1005),
        ("ORA-28040: No matching authentication protocol", 28040),
        ("ORA-01031: insufficient privileges", 1031),
        ("DPY-4001: no credentials specified", 0),
        ("DPY-3015: password verifier type 0x939 is not supported by python-oracledb in thin mode", 0),
    ],
)
def test_refused_logins_and_privileges_are_never_retried(message, code):
    """Even where oracledb marks the error recoverable, a refused login is not retried: repeated
    bad logins lock the JDE service account (sync_assets issue 10)."""
    for recoverable in (False, True):
        err = oracledb.OperationalError(_Error(message, code=code, isrecoverable=recoverable))
        assert DIALECT.is_permanent(err) and not DIALECT.is_transient(err)
        assert not DIALECT.is_transient(sa.exc.OperationalError("connect", {}, err))


def test_a_refused_connection_from_the_real_driver_is_transient():
    port = free_port()
    with pytest.raises(oracledb.Error) as caught:
        oracledb.connect(user="u", password="p", dsn=f"127.0.0.1:{port}/free", tcp_connect_timeout=5)
    assert caught.value.args[0].full_code == "DPY-6005"
    assert DIALECT.is_transient(caught.value)


def test_session_is_named_thin_and_bounded():
    options = DIALECT.engine_options(
        sa.make_url("oracle+oracledb://u@h/?service_name=x"),
        role="source",
        timeouts=Timeouts(connect=30, keepalive=90),
    )
    # expire_time is in minutes, rounded up.
    assert options == {
        "connect_args": {"program": "sync_assets-source", "tcp_connect_timeout": 30, "expire_time": 2}
    }
    assert oracledb.is_thin_mode()


def _engine(port: int, timeouts: Timeouts) -> sa.Engine:
    """An engine made as the resource makes it: the dialect's options and connection hooks."""
    url = sa.make_url(f"oracle+oracledb://u:p@127.0.0.1:{port}/?service_name=free")
    engine = sa.create_engine(url, **DIALECT.engine_options(url, role="source", timeouts=timeouts))
    DIALECT.prepare_engine(engine, role="source")
    return engine


def test_the_engine_options_reach_the_real_driver():
    """A refused port through the dialect's engine: oracledb takes every option (a `program` with a
    space was refused as DPY-3029 before any connection was tried) and reports DPY-6005."""
    engine = _engine(free_port(), Timeouts(connect=5, keepalive=60))
    with pytest.raises(sa.exc.DBAPIError) as caught:
        engine.connect()
    engine.dispose()
    assert caught.value.orig.args[0].full_code == "DPY-6005"
    assert DIALECT.is_transient(caught.value)


def test_a_server_that_never_answers_the_login_times_out_as_transient():
    """tcp_connect_timeout bounds only the TCP connect (python-oracledb issue 451); the dialect's
    deadline bounds the login, so a listener that never answers cannot hang the sync."""
    with silent_server() as port:
        engine = _engine(port, Timeouts(connect=1, keepalive=60))
        with pytest.raises(LoginTimeout) as caught:
            engine.connect()
        engine.dispose()
    assert DIALECT.is_transient(caught.value) and not DIALECT.is_permanent(caught.value)
