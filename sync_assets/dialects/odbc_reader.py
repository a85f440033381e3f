"""ODBC sources read as Arrow batches by arrow-odbc, in Rust: SAP ASE and SQL Server over pyodbc.

A connection opts in with `arrow_odbc: true` (pyodbc URLs only; `pip install sync_assets[arrow-odbc]`).
Each column is fetched as an Arrow type that holds every value of its SQL type (the application
picks the ODBC C type and the driver converts, so the driver's own description does not matter:
psqlODBC describes DOUBLE PRECISION as 32-bit and BOOLEAN as text), then cast to the batch schema
with range checks: asked for a narrower C type, drivers convert without a word (psqlODBC hands
100000 over as -96 when asked for a byte). arrow-odbc fetches the next row set on a thread of its
own while the last one is converted.

What goes to the row path instead (`read_plan` / `query_and_parameters` return None), decided
before anything is read:
- zoned timestamps (the ODBC timestamp struct has no offset), unbounded text and binary
  (VARCHAR(max), TEXT, IMAGE: fetch buffers are sized by the longest possible value, and a longer
  value fails the read instead of being cut), and dtypes with no exact ODBC C type;
- bound parameters other than integers (rendered as literals) and ASCII text (arrow-odbc binds
  every parameter as VARCHAR, and a server converting '2026-03-01 08:00:00.123456' to DATETIME
  refuses the digits the row path's typed parameter keeps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import polars as pl
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mssql
from sqlalchemy.sql import sqltypes, visitors

from sync_assets.batches import typed_batch

OPTION: Final = "sync_assets_arrow_odbc"
"""The engine execution option that turns the reader on: a `Reading`."""
MAX_BYTES_PER_BATCH: Final = 64 * 2**20
# What a text cast of a number, date or time can need: a 38-digit decimal with sign and point.
CAST_TEXT_BYTES: Final = 64
UTF8_BYTES_PER_CHARACTER: Final = 4
UUID_TEXT_BYTES: Final = 36
_MAX_DECIMAL_DIGITS: Final = 38  # decimal128
_FLOAT32_BITS: Final = 24  # FLOAT(n) up to 24 mantissa bits is a REAL

_CAST_SOURCES: Final = (
    sqltypes.Numeric,
    sqltypes.Integer,
    sqltypes.Date,
    sqltypes.DateTime,
    sqltypes.Time,
    sqltypes.Boolean,
    sqltypes.Uuid,
)


@dataclass(frozen=True)
class Reading:
    """How the reader opens its own connection: the login timeout and the keywords pyodbc adds
    to the connection string (APP)."""

    login_timeout: int
    keywords: Mapping[str, str] = field(default_factory=dict)


class ReadPlan(NamedTuple):
    statement: sa.Select[Any]
    arrow_schema: pa.Schema
    uuids: frozenset[str]
    max_text_size: int | None  # arrow-odbc's caps on every text (binary) fetch buffer
    max_binary_size: int | None


def refusal(url: sa.URL) -> str | None:
    """Why `arrow_odbc` cannot apply to `url`; None if it can."""
    if url.get_driver_name() != "pyodbc" or url.get_backend_name() not in ("mssql", "sybase"):
        return f"arrow_odbc reads SQL Server and SAP ASE over pyodbc, not {url.drivername}"
    return None


def missing_package() -> str | None:
    try:
        import arrow_odbc  # noqa: F401
    except ImportError:
        return "arrow_odbc needs the arrow-odbc package: pip install 'sync_assets[arrow-odbc]'"
    return None


def reading(timeout: float, connect_args: Mapping[str, Any]) -> Reading:
    keywords = {k: str(v) for k, v in connect_args.items() if k != "timeout"}
    return Reading(login_timeout=max(1, math.ceil(timeout)), keywords=keywords)


def arrow_batches(
    source: sa.Connection,
    statement: sa.Select[Any],
    *,
    schema: dict[str, pl.DataType],
    table: str,
    batch_size: int,
) -> Iterator[pl.DataFrame] | None:
    """The rows of `statement` read by arrow-odbc on a connection of its own, cast to `schema`;
    None where the connection has not opted in or a column or parameter must go through rows."""
    settings = source.get_execution_options().get(OPTION)
    if not isinstance(settings, Reading):
        return None
    plan = read_plan(statement, schema)
    if plan is None:
        return None
    query = query_and_parameters(plan.statement, source.dialect)
    if query is None:
        return None
    sql, parameters = query
    return batches(
        lambda: _connect(source.engine, settings),
        sql,
        parameters,
        plan,
        schema=schema,
        table=table,
        batch_size=batch_size,
    )


def read_plan(statement: sa.Select[Any], schema: dict[str, pl.DataType]) -> ReadPlan | None:
    """`statement` with UUIDs read as themselves, the Arrow schema to fetch, and the buffer caps
    that text and binary columns need; None if a column has no exact fetch."""
    columns: list[sa.ColumnElement[Any]] = []
    fields: list[pa.Field] = []
    uuids: set[str] = set()
    widest = {"text": 0, "binary": 0}
    casts = False
    for column in statement.selected_columns:
        name = column.key
        if not isinstance(column, sa.Label) or name not in schema:
            return None
        element = column.element
        inner = _uuid_read(element)
        if inner is not None:
            element = inner
            uuids.add(name)
        arrow_type = fetch_type(element)
        if arrow_type is None or not casts_exactly(arrow_type, schema[name]):
            return None
        if pa.types.is_string(arrow_type) or pa.types.is_binary(arrow_type):
            size = UUID_TEXT_BYTES if inner is not None else _bounded_size(element)
            if size is None:
                return None
            casts = casts or size == CAST_TEXT_BYTES
            kind = "text" if pa.types.is_string(arrow_type) else "binary"
            widest[kind] = max(widest[kind], size)
        columns.append(element.label(name))
        fields.append(pa.field(name, arrow_type))
    if [c.key for c in columns] != list(schema):
        return None
    # A cast's NVARCHAR(max) is described as unbounded, and some drivers describe a declared
    # length as unbounded too (psqlODBC's BYTEA): a cap as wide as the widest declared column
    # bounds the buffers without cutting a value.
    max_text = max(widest["text"], CAST_TEXT_BYTES) if casts or widest["text"] else None
    max_binary = widest["binary"] or None
    rewritten = statement.with_only_columns(*columns, maintain_column_froms=True)
    return ReadPlan(rewritten, pa.schema(fields), frozenset(uuids), max_text, max_binary)


def fetch_type(element: sa.ColumnElement[Any]) -> pa.DataType | None:
    """The Arrow type arrow-odbc fetches a column as (it binds the matching ODBC C type): one that
    holds every value of the column's SQL type, since drivers convert to a narrower C type
    without a word (psqlODBC turns 100000 into -96 when asked for a byte). None if there is none."""
    if isinstance(element, sa.Cast) and isinstance(element.clause.type, _CAST_SOURCES):
        return pa.string()  # a number, date or time as the exact text the row path reads too
    type_ = element.type
    unsigned = _UNSIGNED.get(getattr(type_, "__visit_name__", ""), False)
    if unsigned is not False:
        return unsigned
    match type_:
        case sqltypes.Boolean():
            return pa.bool_()
        case sqltypes.SmallInteger():
            return pa.int16()
        case sqltypes.BigInteger():
            return pa.int64()
        case sqltypes.Integer():  # TINYINT (0..255) included
            return pa.int32()
        case mssql.REAL():
            return pa.float32()
        case sqltypes.Float(precision=int(bits)) if bits <= _FLOAT32_BITS:
            return pa.float32()
        case sqltypes.Float():
            return pa.float64()
        case sqltypes.Numeric(precision=int(precision), scale=scale) if precision <= _MAX_DECIMAL_DIGITS:
            return pa.decimal128(precision, scale or 0)
        case mssql.DATETIMEOFFSET():
            return None  # the ODBC timestamp struct has no offset
        case sqltypes.DateTime(timezone=False):
            return pa.timestamp("us")  # what the row path keeps; nanoseconds end in 2262
        case sqltypes.Date():
            return pa.date32()
        case sqltypes.Time(timezone=False):
            return pa.time64("ns")
        case sqltypes.Uuid() | sqltypes.String():
            return pa.string()
        case sqltypes._Binary():
            return pa.binary()
    return None


def casts_exactly(fetched: pa.DataType, wanted: pl.DataType) -> bool:
    """Whether a column fetched as `fetched` casts to the batch dtype `wanted` without changing a
    value: integers range-checked by the cast, decimals only to as many digits on both sides of
    the point, timestamps and times cut to the microseconds the row path keeps."""
    if pa.types.is_integer(fetched):
        return wanted.is_integer()
    if pa.types.is_floating(fetched):
        return wanted == pl.Float64 or (wanted == pl.Float32 and fetched == pa.float32())
    if pa.types.is_decimal(fetched):
        digits, scale = fetched.precision, fetched.scale  # type: ignore[attr-defined]
        if wanted.is_integer():
            return scale == 0
        if not isinstance(wanted, pl.Decimal) or wanted.precision is None:
            return False
        return wanted.scale >= scale and wanted.precision - wanted.scale >= digits - scale
    if pa.types.is_timestamp(fetched):
        return isinstance(wanted, pl.Datetime) and wanted.time_zone is None
    expected = {
        pa.bool_(): pl.Boolean,
        pa.date32(): pl.Date,
        pa.time64("ns"): pl.Time,
        pa.string(): pl.String,
        pa.binary(): pl.Binary,
    }
    return expected.get(fetched) == wanted


# ASE's unsigned integers (sybase.py's types): each fetched one size up; 0..2^64-1 fits no
# signed Arrow integer, so UNSIGNED BIGINT goes to rows.
_UNSIGNED: Final[dict[str, pa.DataType | None]] = {
    "UNSIGNED_SMALLINT": pa.int32(),
    "UNSIGNED_INT": pa.int64(),
    "UNSIGNED_BIGINT": None,
}


def query_and_parameters(
    statement: sa.Select[Any], dialect: sa.Dialect
) -> tuple[str, list[str | None]] | None:
    """The SQL text and its positional parameters as arrow-odbc binds them (VARCHAR): integers
    rendered as literals, ASCII text bound; None if another parameter would need its own type."""

    def literal_integers(element: Any) -> Any:
        if isinstance(element, sa.BindParameter) and _integers(element.value):
            return element.render_literal_execute()
        return None

    rewritten = visitors.replacement_traverse(statement, {}, literal_integers)
    compiled = rewritten.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    values = compiled.construct_params()
    parameters: list[str | None] = []
    for name in compiled.positiontup or ():
        value = values[name]
        if value is not None and not (isinstance(value, str) and value.isascii() and "\0" not in value):
            return None
        parameters.append(value)
    return compiled.string, parameters


def batches(
    connect: Callable[[], Any],
    query: str,
    parameters: list[str | None],
    plan: ReadPlan,
    *,
    schema: dict[str, pl.DataType],
    table: str,
    batch_size: int,
) -> Iterator[pl.DataFrame]:
    """The rows of `query`, on an arrow-odbc connection from `connect` opened at the first batch
    and freed (its statement with it) when the batches end, fail or are closed."""
    connection = connect()
    try:
        reader = connection.read_arrow_batches(
            query,
            batch_size=batch_size,
            parameters=parameters or None,
            max_bytes_per_batch=MAX_BYTES_PER_BATCH,
            max_text_size=plan.max_text_size,
            max_binary_size=plan.max_binary_size,
            schema=plan.arrow_schema,
            fetch_concurrently=True,
        )
        try:
            for batch in reader:
                if batch.num_rows:
                    frame = pl.from_arrow(batch)
                    yield typed_batch(frame, schema, uuids=plan.uuids, table=table)  # type: ignore[arg-type]
        finally:
            del reader  # arrow-odbc frees the statement when its reader goes
    finally:
        del connection


def connection_string(engine: sa.Engine, settings: Reading) -> str:
    """The ODBC connection string pyodbc would open for `engine`, with the keywords it adds."""
    (odbc_string, *_), _ = engine.dialect.create_connect_args(engine.url)
    return ";".join([odbc_string.rstrip(";"), *(f"{k}={v}" for k, v in settings.keywords.items())])


def _connect(engine: sa.Engine, settings: Reading) -> Any:
    import arrow_odbc

    return arrow_odbc.connect(
        connection_string=connection_string(engine, settings), login_timeout_sec=settings.login_timeout
    )


def _integers(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return bool(value) and all(_integers(v) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded_size(element: sa.ColumnElement[Any]) -> int | None:
    """Bytes the widest value of a text or binary column can take; None if unbounded."""
    if isinstance(element, sa.Cast) and isinstance(element.clause.type, _CAST_SOURCES):
        return CAST_TEXT_BYTES
    length = getattr(element.type, "length", None)
    if not isinstance(length, int) or length <= 0:
        return None
    if isinstance(element.type, sqltypes.String):
        return length * UTF8_BYTES_PER_CHARACTER
    return length


def _uuid_read(element: sa.ColumnElement[Any]) -> sa.ColumnElement[Any] | None:
    """A UUID column under the row path's text cast, read as itself (the driver's SQL_GUID is
    fetched as its 36-character text); None otherwise."""
    if isinstance(element, sa.Cast) and isinstance(element.clause.type, sqltypes.Uuid):
        return element.clause  # type: ignore[return-value]
    if isinstance(element.type, sqltypes.Uuid):
        return element
    return None
