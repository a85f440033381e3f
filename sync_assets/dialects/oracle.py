"""Oracle Database (JD Edwards) as a source: exact NUMBERs, upper-case names, Arrow batches via oracledb.

Thin mode only (no Instant Client). Install with `pip install sync_assets[oracle]`; oracledb is
imported by SQLAlchemy when an engine is made, so this module imports without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import oracle
from sqlalchemy.dialects.oracle.base import OracleDialect as SAOracleDialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import sqltypes, visitors

from sync_assets.batches import cast_batch
from sync_assets.dialects.base import Capabilities, SourceDialect, Timeouts, driver_error
from sync_assets.dialects.deadline import connect_within
from sync_assets.errors import UnsupportedType
from sync_assets.types import ColumnType, Kind

# NUMBER keeps 38 significant digits; NUMBER(p,0) up to 18 digits fits an int64
# (https://docs.oracle.com/en/database/oracle/oracle-database/19/sqlrf/Data-Types.html#GUID-75209AF6-476D-4C44-A5DC-5FA70D701B78).
NUMBER_DIGITS = 38
INT64_DIGITS = 18
# TIMESTAMP without (n) keeps 6 fractional digits, at most 9 (same page, "TIMESTAMP Data Type").
DEFAULT_FRACTIONAL_DIGITS = 6
MAX_FRACTIONAL_DIGITS = 9
TIMESTAMP_FORMAT = "YYYY-MM-DD HH24:MI:SS.FF6"

# Retryable errors. ORA codes (https://docs.oracle.com/en/error-help/db/): deadlock (00060),
# serialization (08177), resource busy (00054, 30006), snapshot too old on long reads (01555),
# lost/closed connections (03113, 03114, 03135, 12537, 12547), listener and instance not ready
# (12170, 12514, 12516, 12519, 12520, 12528, 12541, 01033, 01034, 01089), replay refused (25408).
TRANSIENT_ORA_CODES = frozenset(
    {60, 8177, 54, 30006, 1555, 3113, 3114, 3135, 12537, 12547, 12170, 12514, 12516, 12519, 12520}
    | {12528, 12541, 1033, 1034, 1089, 25408}
)
# python-oracledb's own (https://python-oracledb.readthedocs.io/en/latest/api_manual/errors.html):
# connection closed (4011), call timeout (4024), listener refused / cannot connect (6000, 6005).
TRANSIENT_DRIVER_CODES = frozenset({"DPY-4011", "DPY-4024", "DPY-6000", "DPY-6005"})
# Refusals no retry fixes (same pages): invalid username/password (01017), account locked (28000),
# password expired (28001), no CREATE SESSION privilege (01045), null password (01005), no
# matching authentication protocol (28040), insufficient privileges (01031); oracledb: no
# credentials (DPY-4001), password verifier the thin mode cannot use (DPY-3015). Checked before
# `isrecoverable`, so a refused login is never retried.
PERMANENT_ORA_CODES = frozenset({1017, 28000, 28001, 1045, 1005, 28040, 1031})
PERMANENT_DRIVER_CODES = frozenset({"DPY-4001", "DPY-3015"})
# Every session gets the same number format and time zone, whatever the database defaults:
# TO_CHAR(NUMBER) writes '.' as decimal point, and naive timestamps compare as UTC.
SESSION_SETTINGS = "ALTER SESSION SET NLS_NUMERIC_CHARACTERS = '.,' TIME_ZONE = 'UTC'"

# SQLAlchemy's own dictionary tables carry a db-link placeholder only its reflection resolves.
ALL_TAB_COLS = sa.table(
    "all_tab_cols",
    sa.column("owner"),
    sa.column("table_name"),
    sa.column("column_name"),
    sa.column("data_type"),
    sa.column("data_scale"),
)


class ToChar(sa.Cast):  # type: ignore[type-arg]
    """CAST(x AS text) in meaning, TO_CHAR(x) on Oracle: exact (TM9) for NUMBER, where a CAST to
    text would ask for a CLOB. A `Cast`, so `Source.comparable` unwraps it to the raw column."""

    inherit_cache = True

    def __init__(self, expression: sa.ColumnElement[Any]) -> None:
        super().__init__(expression, sa.String())


@compiles(ToChar, "oracle")
def _to_char(element: ToChar, compiler: Any, **kw: Any) -> str:
    return f"TO_CHAR({compiler.process(element.clause, **kw)})"


class Timestamp(oracle.TIMESTAMP):
    """Oracle TIMESTAMP with the fractional digits that SQLAlchemy's reflection drops."""

    def __init__(self, precision: int, *, timezone: bool = False, local_timezone: bool = False) -> None:
        super().__init__(timezone=timezone, local_timezone=local_timezone)
        self.precision = precision


class OracleDialect(SourceDialect):
    name = "oracle"
    capabilities = Capabilities(
        max_identifier_length=128,  # 12.2+; 30 before
        transactional_ddl=False,  # DDL commits implicitly
        max_parameters=65_535,
        max_decimal_precision=NUMBER_DIGITS,
        max_fractional_digits=MAX_FRACTIONAL_DIGITS,
    )

    def engine_options(self, url: sa.URL, *, role: str, timeouts: Timeouts) -> dict[str, Any]:
        # SQLAlchemy's oracledb dialect stays in thin mode unless `thick_mode` is passed.
        # tcp_connect_timeout is in seconds; expire_time, the keep-alive probe interval, in whole
        # minutes (https://python-oracledb.readthedocs.io/en/latest/api_manual/module.html#oracledb.connect).
        # `program` goes into the connect descriptor, which refuses spaces (DPY-3029).
        return {
            "connect_args": {
                "program": f"sync_assets-{role}",
                "tcp_connect_timeout": timeouts.connect,
                "expire_time": max(1, math.ceil(timeouts.keepalive / 60)),
            }
        }

    def prepare_engine(self, engine: sa.Engine, *, role: str) -> None:
        @sa.event.listens_for(engine, "do_connect")
        def _bounded(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            # Thin mode bounds only the TCP connect with tcp_connect_timeout: a server that accepts
            # and never answers kept the login waiting for ever (python-oracledb issue 451).
            timeout = cparams.get("tcp_connect_timeout")
            return connect_within(lambda: dialect.connect(*cargs, **cparams), timeout)

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.module = f"sync_assets {role}"  # V$SESSION.MODULE
            with dbapi_connection.cursor() as cursor:
                cursor.execute(SESSION_SETTINGS)

    # -- source tables ---------------------------------------------------------------------------
    def reflect_table(self, conn: sa.Connection, name: str, *, schema: str | None) -> sa.Table:
        """Reflect with case-insensitive names (catalog `F4801`/`PRODDTA` as SQLAlchemy spells them),
        and give NUMBERs and TIMESTAMPs what reflection leaves out.

        SQLAlchemy files a reflected `F4801` under `f4801` and would report an upper-case name as
        missing; it also drops TIMESTAMP(n)'s n, read here from ALL_TAB_COLUMNS.
        """
        ora = conn.dialect
        table = super().reflect_table(
            conn, _case_insensitive(ora, name), schema=_case_insensitive(ora, schema) if schema else None
        )
        digits: dict[str, int] = {}
        if any(isinstance(c.type, oracle.TIMESTAMP) for c in table.columns):
            digits = {
                n: int(s) for n, s in conn.execute(fractional_digits_query(ora, table)) if s is not None
            }
        for column in table.columns:
            column.type = exact_type(column.type, digits.get(ora.denormalize_name(column.name)))
        return table

    def source_column_name(self, reflected: str) -> str:
        """Oracle's own spelling: case-insensitive names in upper case (`WADOCO`), as JDE users
        write them; quoted (case-sensitive) names as they are."""
        if getattr(reflected, "quote", None):
            return str(reflected)
        return str(_NAMES.denormalize_name(reflected))

    def source_expression(self, column: sa.ColumnElement[Any], ct: ColumnType) -> sa.ColumnElement[Any]:
        if ct.kind is Kind.DATETIME and ct.timezone:
            # oracledb drops the zone and returns each value's wall-clock time in its own offset.
            return sa.func.sys_extract_utc(column, type_=oracle.TIMESTAMP())
        return super().source_expression(column, ct)

    def text_expression(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return ToChar(column)

    # -- types -----------------------------------------------------------------------------------
    def source_type(self, type_: sa.types.TypeEngine[Any], *, table: str, column: str) -> ColumnType:
        t = type_
        if isinstance(t, (oracle.BINARY_FLOAT, oracle.BINARY_DOUBLE)):
            return ColumnType(Kind.FLOAT)
        if isinstance(t, sqltypes.Float):
            # FLOAT(b), REAL, DOUBLE PRECISION: decimal NUMBERs with a binary precision, not doubles.
            return ColumnType(Kind.DECIMAL)
        if isinstance(t, oracle.NUMBER):
            return number_type(t.precision, t.scale)
        if isinstance(t, sqltypes.Integer):  # NUMBER(*,0), INTEGER: 38 digits
            return ColumnType(Kind.DECIMAL, precision=NUMBER_DIGITS, scale=0)
        if isinstance(t, oracle.DATE):
            return ColumnType(Kind.DATETIME, precision=0)  # DATE keeps the time of day, to the second
        if isinstance(t, oracle.TIMESTAMP):
            precision = getattr(t, "precision", None)
            zoned = bool(t.timezone or t.local_timezone)
            return ColumnType(
                Kind.DATETIME,
                precision=DEFAULT_FRACTIONAL_DIGITS if precision is None else precision,
                timezone=zoned,
            )
        if isinstance(t, oracle.BFILE) or not isinstance(t, (sqltypes.String, sqltypes._Binary)):
            if isinstance(t, sqltypes.Boolean):
                return ColumnType(Kind.BOOLEAN)
            raise UnsupportedType(table, column, _type_name(t))
        if isinstance(t, sqltypes.String):  # CHAR, NCHAR, VARCHAR2, NVARCHAR2, CLOB, NCLOB, LONG
            return ColumnType(Kind.STRING, length=t.length)
        return ColumnType(Kind.BINARY, length=getattr(t, "length", None))  # RAW, BLOB

    # -- errors ----------------------------------------------------------------------------------
    def is_transient(self, error: BaseException) -> bool:
        code, full_code = _codes(error)
        if code is None or full_code is None:
            return super().is_transient(error)
        if self.is_permanent(error):
            return False
        return (
            code in TRANSIENT_ORA_CODES
            or full_code in TRANSIENT_DRIVER_CODES
            or bool(getattr(_detail(error), "isrecoverable", False))  # oracledb's recoverable ORA codes
            or super().is_transient(error)
        )

    def is_permanent(self, error: BaseException) -> bool:
        code, full_code = _codes(error)
        return code in PERMANENT_ORA_CODES or full_code in PERMANENT_DRIVER_CODES

    # -- reading ---------------------------------------------------------------------------------
    def arrow_batches(
        self,
        source: sa.Connection,
        statement: sa.Select[Any],
        *,
        schema: dict[str, pl.DataType],
        table: str,
        batch_size: int,
    ) -> Iterator[pl.DataFrame] | None:
        """oracledb's `fetch_df_batches`, asked for the batch schema's own Arrow types.

        The requested schema makes NUMBER(p,s) arrive as decimal128(p,s) (never float64, which is
        oracledb's default), NUMBER(p,0) as the integer width, TIMESTAMP(9) in nanoseconds; a value
        that does not fit fails loudly. Bounds stay bind parameters; on the source's own session.
        """
        requested = arrow_schema(schema)
        if requested is None:
            return None
        # IN lists (the keys of a hash incremental) as one parameter per value.
        compiled = timestamp_bounds(statement).compile(
            dialect=source.dialect, compile_kwargs={"render_postcompile": True}
        )
        parameters = compiled.construct_params(escape_names=True)
        raw = source.connection.driver_connection
        return _frames(raw, compiled.string, parameters, requested, schema, table, batch_size)


def _frames(
    raw: Any,
    sql: str,
    parameters: dict[str, Any],
    requested: pa.Schema,
    schema: dict[str, pl.DataType],
    table: str,
    batch_size: int,
) -> Iterator[pl.DataFrame]:
    batches = raw.fetch_df_batches(
        sql, parameters, size=batch_size, fetch_decimals=True, requested_schema=requested
    )
    for batch in batches:
        frame = pl.from_arrow(pa.table(batch))
        assert isinstance(frame, pl.DataFrame)
        if frame.height:
            yield cast_batch(frame.rename(dict(zip(frame.columns, schema, strict=True))), schema, table=table)


def number_type(precision: int | None, scale: int | None) -> ColumnType:
    """NUMBER(p,s) as the narrowest exact type; no precision at all is an unbounded decimal."""
    if precision is None and scale is None:
        return ColumnType(Kind.DECIMAL)
    digits = NUMBER_DIGITS if precision is None else precision
    scale = scale or 0
    if scale < 0:  # NUMBER(5,-2): integers rounded to hundreds, 7 digits
        return ColumnType(Kind.DECIMAL, precision=digits - scale, scale=0)
    if scale == 0 and digits <= INT64_DIGITS:
        return ColumnType(Kind.INTEGER, bits=16 if digits <= 4 else 32 if digits <= 9 else 64)
    return ColumnType(Kind.DECIMAL, precision=max(digits, scale), scale=scale)


def exact_type(type_: sa.types.TypeEngine[Any], digits: int | None) -> sa.types.TypeEngine[Any]:
    """A reflected type SQLAlchemy reads exactly: Decimal (not float) for every NUMBER that may
    hold a fraction, and TIMESTAMP with its fractional digits."""
    if isinstance(type_, oracle.NUMBER) and not (type_.scale == 0 and type_.precision is not None):
        return oracle.NUMBER(type_.precision, type_.scale, asdecimal=True)
    if isinstance(type_, oracle.TIMESTAMP) and digits is not None:
        return Timestamp(digits, timezone=type_.timezone, local_timezone=type_.local_timezone)
    return type_


def fractional_digits_query(ora: sa.Dialect, table: sa.Table) -> sa.Select[Any]:
    """(column, fractional digits) of the table's TIMESTAMP columns, from the data dictionary."""
    cols = ALL_TAB_COLS
    owner = ora.denormalize_schema_name(table.schema or ora.default_schema_name)  # type: ignore[attr-defined]
    return sa.select(cols.c.column_name, cols.c.data_scale).where(
        cols.c.owner == owner,
        cols.c.table_name == ora.denormalize_name(table.name),
        cols.c.data_type.like("TIMESTAMP%"),
    )


def timestamp_bounds(statement: sa.Select[Any]) -> sa.Select[Any]:
    """Datetime bounds against TIMESTAMPs as TO_TIMESTAMP(text): oracledb binds a datetime as DATE,
    which drops the fraction (python-oracledb issue 563). SQLAlchemy's own path uses setinputsizes."""

    def replace(element: Any) -> Any:
        if (
            isinstance(element, sa.BindParameter)
            and isinstance(element.value, datetime)
            and isinstance(element.type, oracle.TIMESTAMP)
        ):
            value = element.value
            if value.tzinfo is not None:
                # Zoned watermarks are compared as sys_extract_utc(col): a UTC wall-clock time.
                value = value.astimezone(UTC).replace(tzinfo=None)
            text = value.isoformat(sep=" ", timespec="microseconds")
            return sa.func.to_timestamp(
                sa.bindparam(element.key, text, type_=sa.String()),
                sa.literal(TIMESTAMP_FORMAT),
                type_=element.type,
            )
        return None

    return visitors.replacement_traverse(statement, {}, replace)  # type: ignore[return-value]


def arrow_schema(schema: dict[str, pl.DataType]) -> pa.Schema | None:
    """The Arrow types oracledb should build (its explicit type mapping); None if one has none."""
    fields = []
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Decimal):
            arrow: pa.DataType | None = pa.decimal128(dtype.precision or NUMBER_DIGITS, dtype.scale or 0)
        elif isinstance(dtype, pl.Datetime):
            arrow = pa.timestamp(dtype.time_unit)  # zoned columns are read as UTC
        else:
            arrow = _ARROW_TYPES.get(dtype)
        if arrow is None:
            return None
        fields.append(pa.field(name, arrow))
    return pa.schema(fields)


_ARROW_TYPES: dict[pl.DataType, pa.DataType] = {
    pl.Int16(): pa.int16(),
    pl.Int32(): pa.int32(),
    pl.Int64(): pa.int64(),
    pl.Float64(): pa.float64(),
    pl.String(): pa.large_string(),
    pl.Binary(): pa.large_binary(),
    pl.Boolean(): pa.bool_(),
}


def _case_insensitive(ora: sa.Dialect, name: str) -> str:
    """`F4801` and `f4801` both name Oracle's F4801, which SQLAlchemy spells `f4801`."""
    return str(ora.normalize_name(ora.denormalize_name(name)))


def _type_name(type_: sa.types.TypeEngine[Any]) -> str:
    if isinstance(type_, sqltypes.NullType):
        return "a type SQLAlchemy does not recognise (e.g. XMLTYPE, UROWID, LONG RAW)"
    try:
        return str(type_.compile(dialect=_NAMES))
    except sa.exc.CompileError:
        return type(type_).__name__


_NAMES = SAOracleDialect()  # name normalization only; needs no driver


def _detail(error: BaseException) -> Any:
    """oracledb's `_Error` (code, full_code, isrecoverable) inside an oracledb exception, if any."""
    return next(iter(getattr(driver_error(error), "args", ())), None)


def _codes(error: BaseException) -> tuple[int | None, str | None]:
    """The ORA number (0 for a DPY error) and full code ("ORA-01017", "DPY-6005") of an oracledb error."""
    detail = _detail(error)
    return getattr(detail, "code", None), getattr(detail, "full_code", None)


DIALECT = OracleDialect()
