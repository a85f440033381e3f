"""SQL Server as source and cache: #temp staging loaded with fast_executemany, one MERGE per upsert.
On mssql-python, loads of several batches are bulk-copied into a committed heap (`mssql_bulk`).

pyodbc is imported only where a connection already exists, so this module (and compiling its
SQL) works on machines without unixODBC. Sources on mssql-python (`mssql+mssqlpython://`) are
read through its Arrow reader (`mssql_reader`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import mssql
from sqlalchemy.sql import sqltypes

from sync_assets.dialects import mssql_bulk, mssql_reader, odbc, odbc_reader
from sync_assets.dialects.base import Capabilities, Dialect, Timeouts, driver_error, latest_per_key
from sync_assets.dialects.merge import Merge
from sync_assets.dialects.upsert import StagedChanges, UpsertCounts, staged_changes
from sync_assets.errors import SyncTransientError
from sync_assets.types import ColumnType, Kind, from_sqlalchemy

# https://learn.microsoft.com/en-us/sql/sql-server/maximum-capacity-specifications-for-sql-server
MAX_PARAMETERS: Final = 2100
# SQLAlchemy's own limit for multi-row VALUES (dialects/mssql/base.py): "in fact you can have
# 2099 parameters", the RPC call takes one of them.
USABLE_PARAMETERS: Final = MAX_PARAMETERS - 1
# A table value constructor takes at most 1000 rows (error 10738).
MAX_VALUES_ROWS: Final = 1000
# Temp table names are padded to 128 characters internally, so they may have only 116
# (https://learn.microsoft.com/en-us/sql/t-sql/statements/create-table-transact-sql#temporary-tables).
TEMP_NAME_LENGTH: Final = 116
MAX_NVARCHAR: Final = 4000  # longer is NVARCHAR(max)
MAX_VARBINARY: Final = 8000
MAX_DIGITS: Final = 38
# An unbounded source decimal has no declared scale: ten fractional digits, and Dialect.loss()
# reports the mapping as lossy (values with more digits fail on insert or round).
UNBOUNDED_DECIMAL_SCALE: Final = 10
FRACTIONAL_DIGITS: Final = 7  # DATETIME2(7), DATETIMEOFFSET(7), TIME(7): 100 ns
MAX_KEY_BYTES: Final = 900  # clustered index key
DATETIME_DIGITS: Final = 3  # the legacy DATETIME type (1/300 s)
# What a source read delivers: pyodbc hands DATETIME2/DATETIMEOFFSET/TIME values to Python as
# datetime/time objects, which stop at microseconds. Claiming 7 digits would also make batches
# carry nanoseconds, whose range ends in 2262 and so refuses the 9999-12-31 sentinel ERPs use.
READ_DIGITS: Final = 6
SYNC_LOCK: Final = "sync_assets.sync_log"
# The SQLSTATEs whose retry odbc.py decides (connection class 08, timeouts, deadlock; a refused login).
MSSQL_PYTHON_STATES: Final = (
    "08001",
    "08002",
    "08003",
    "08004",
    "08007",
    "08S01",
    "HYT00",
    "HYT01",
    "40001",
    "28000",
)

# Retryable SQL Server error numbers (the retryable SQLSTATEs are ODBC's, in odbc.py): SqlClient's
# baseline transient list (https://learn.microsoft.com/en-us/dotnet/api/
# microsoft.data.sqlclient.sqlconfigurableretryfactory.baselinetransienterrors) plus 1205/1222
# and the client timeout -2. 4060 (cannot open the database the login asked for) stays in, as in
# SqlClient's list: Azure SQL returns it while a database fails over, and it comes after the
# password was accepted, so retrying cannot lock the account.
TRANSIENT_NUMBERS: Final = frozenset(
    {-2, 20, 64, 233, 997, 1204, 1205, 1222, 4060, 4221, 10053, 10054, 10060, 10928, 10929}
    | {40143, 40197, 40501, 40540, 40613, 42108, 42109, 49918, 49919, 49920}
)
# Refusals no retry fixes (https://learn.microsoft.com/en-us/sql/relational-databases/errors-events/
# database-engine-events-and-errors): 18456 login failed, 18452 untrusted domain, 18470 login
# disabled, 18486 locked out, 18487 password expired, 18488 password must be changed, 916 no
# access to the database, 229/230/262 permission denied; FreeTDS's 20014 "Login incorrect"
# (include/tds.h, TDSEPWD).
PERMANENT_NUMBERS: Final = frozenset({18456, 18452, 18470, 18486, 18487, 18488, 916, 229, 230, 262, 20014})
# The ODBC driver's own keep-alive keywords (https://learn.microsoft.com/en-us/sql/connect/odbc/
# dsn-connection-string-attribute: KeepAlive, KeepAliveInterval, Linux and macOS, 17.8+); FreeTDS
# turns keep-alive on for every socket by itself (src/tds/net.c).
MICROSOFT_DRIVER: Final = "ODBC Driver"
MSSQL_PYTHON: Final = "mssqlpython"  # SQLAlchemy's name for Microsoft's mssql-python driver
KEEPALIVE_INTERVAL_SECONDS: Final = 1
# pyodbc formats each diagnostic record as "[SQLSTATE] message (native number) (SQLFunction)",
# later records as "; [SQLSTATE] message (native number)".


class MSSQLDialect(Dialect):
    name = "mssql"
    capabilities = Capabilities(
        max_identifier_length=128,
        transactional_ddl=True,
        max_parameters=MAX_PARAMETERS,
        max_decimal_precision=MAX_DIGITS,
        max_fractional_digits=FRACTIONAL_DIGITS,
        time_zones=True,
        # The Arrow readers (mssql-python's, arrow-odbc's) read on a connection of their own;
        # without one, arrow_batches() returns None and rows are read on the sync's connection.
        independent_reader=True,
    )

    def engine_options(self, url: sa.URL, *, role: str, timeouts: Timeouts) -> dict[str, Any]:
        # pyodbc's and mssql-python's `timeout` is the login timeout (SQL_ATTR_LOGIN_TIMEOUT); other
        # keywords go into the connection string. APP names the session in sys.dm_exec_sessions;
        # mssql-python refuses it (it sets its own) and always loads Microsoft's ODBC Driver 18.
        args: dict[str, Any] = {"timeout": max(1, math.ceil(timeouts.connect))}
        if url.get_driver_name() != MSSQL_PYTHON:
            args["APP"] = f"sync_assets {role}"
        if url.get_driver_name() == MSSQL_PYTHON or MICROSOFT_DRIVER in str(url.query.get("driver", "")):
            args |= {
                "KeepAlive": max(1, round(timeouts.keepalive)),
                "KeepAliveInterval": KEEPALIVE_INTERVAL_SECONDS,
            }
        return {"connect_args": args}

    def prepare_engine(self, engine: sa.Engine, *, role: str) -> None:
        if role != "cache":
            return

        # Any error aborts the whole transaction server-side too, so a client timeout in the
        # middle of the swap cannot leave a half-open transaction holding its locks
        # (https://learn.microsoft.com/en-us/sql/t-sql/statements/set-xact-abort-transact-sql).
        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SET XACT_ABORT ON")
            finally:
                cursor.close()

    def arrow_batches(
        self,
        source: sa.Connection,
        statement: sa.Select[Any],
        *,
        schema: dict[str, pl.DataType],
        table: str,
        batch_size: int,
    ) -> Iterator[pl.DataFrame] | None:
        """mssql-python's Arrow reader (`mssql_reader`), or arrow-odbc's over pyodbc where the
        connection opts in (`odbc_reader`); None (rows) otherwise, and for a column either
        would not deliver exactly."""
        if mssql_reader.uses_driver(source):
            return mssql_reader.arrow_batches(
                source, statement, schema=schema, table=table, batch_size=batch_size
            )
        return odbc_reader.arrow_batches(source, statement, schema=schema, table=table, batch_size=batch_size)

    # -- types -----------------------------------------------------------------------------------
    def text_expression(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # sa.Text is VARCHAR(max) here, which would replace characters outside the code page.
        return sa.cast(column, mssql.NVARCHAR())

    def source_type(self, type_: sa.types.TypeEngine[Any], *, table: str, column: str) -> ColumnType:
        """SQL Server types SQLAlchemy reflects as its own classes. Reflection reports no
        fractional digits for DATETIME2/DATETIMEOFFSET/TIME, so they count as the maximum, 7."""
        if isinstance(type_, mssql.TIMESTAMP):  # ROWVERSION: 8 bytes, not a point in time
            return ColumnType(Kind.BINARY, length=8)
        if isinstance(type_, mssql.MONEY):
            return ColumnType(Kind.DECIMAL, precision=19, scale=4)
        if isinstance(type_, mssql.SMALLMONEY):
            return ColumnType(Kind.DECIMAL, precision=10, scale=4)
        if isinstance(type_, mssql.TINYINT):  # 0..255 does not fit a signed byte
            return ColumnType(Kind.INTEGER, bits=16)
        if isinstance(type_, mssql.SMALLDATETIME):
            return ColumnType(Kind.DATETIME, precision=0)
        if isinstance(type_, mssql.DATETIMEOFFSET | mssql.DATETIME2):
            return ColumnType(
                Kind.DATETIME, precision=_read_digits(type_), timezone=isinstance(type_, mssql.DATETIMEOFFSET)
            )
        if isinstance(type_, mssql.TIME):
            return ColumnType(Kind.TIME, precision=_read_digits(type_))
        if isinstance(type_, sqltypes.DATETIME):
            return ColumnType(Kind.DATETIME, precision=DATETIME_DIGITS)
        return from_sqlalchemy(type_, table=table, column=column)

    def column_type(self, ct: ColumnType) -> sa.types.TypeEngine[Any]:
        match ct.kind:
            case Kind.STRING:
                # NVARCHAR(n) counts UTF-16 code units, and a character beyond the BMP (an
                # emoji) takes two: n source characters need 2n.
                if ct.length and ct.length * 2 <= MAX_NVARCHAR:
                    return mssql.NVARCHAR(ct.length * 2)
                return mssql.NVARCHAR()
            case Kind.BINARY:
                return mssql.VARBINARY(ct.length if ct.length and ct.length <= MAX_VARBINARY else None)
            case Kind.DECIMAL:
                return sa.DECIMAL(*decimal_digits(ct))
            case Kind.FLOAT:
                return mssql.FLOAT(53)
            case Kind.BOOLEAN:
                return mssql.BIT()
            case Kind.DATETIME if ct.timezone:
                return mssql.DATETIMEOFFSET(FRACTIONAL_DIGITS)
            case Kind.DATETIME:
                return mssql.DATETIME2(FRACTIONAL_DIGITS)
            case Kind.TIME:
                return mssql.TIME(FRACTIONAL_DIGITS)
            case Kind.UUID:
                return mssql.UNIQUEIDENTIFIER(as_uuid=False)
        return super().column_type(ct)

    def key_column_type(self, ct: ColumnType) -> sa.types.TypeEngine[Any]:
        """NVARCHAR(max) and VARBINARY(max) cannot be indexed; an index key holds 900 bytes
        (https://learn.microsoft.com/en-us/sql/sql-server/maximum-capacity-specifications-for-sql-server).
        A longer value then fails the load, naming the table."""
        if ct.kind is Kind.STRING and (ct.length is None or ct.length * 2 > MAX_KEY_BYTES // 2):
            return mssql.NVARCHAR(MAX_KEY_BYTES // 2)
        if ct.kind is Kind.BINARY and (ct.length is None or ct.length > MAX_KEY_BYTES):
            return mssql.VARBINARY(MAX_KEY_BYTES)
        return self.column_type(ct)

    # -- errors ----------------------------------------------------------------------------------
    def is_transient(self, error: BaseException) -> bool:
        if self.is_permanent(error):
            return False
        if (state := mssql_python_state(driver_error(error))) is not None:
            return state.startswith(odbc.TRANSIENT_STATE_CLASSES) or state in odbc.TRANSIENT_STATES
        return bool(odbc.is_transient_error(driver_error(error), TRANSIENT_NUMBERS)) or super().is_transient(
            error
        )

    def is_permanent(self, error: BaseException) -> bool:
        if (state := mssql_python_state(driver_error(error))) is not None:
            return state in odbc.PERMANENT_STATES
        return odbc.is_permanent_error(driver_error(error), PERMANENT_NUMBERS, TRANSIENT_NUMBERS)

    def serialize_starts(self, conn: sa.Connection) -> None:
        # An application lock owned by the transaction: starts take turns, readers of sync_log
        # are not blocked (https://learn.microsoft.com/en-us/sql/relational-databases/
        # system-stored-procedures/sp-getapplock-transact-sql).
        conn.execute(applock_statement(), {"resource": SYNC_LOCK})
        mode = conn.execute(applock_mode_query(), {"resource": SYNC_LOCK}).scalar()
        if mode != "Exclusive":
            msg = f"could not take the application lock {SYNC_LOCK} (holding: {mode})"
            raise SyncTransientError(msg)

    # -- staging ---------------------------------------------------------------------------------
    def staging_table(self, target: sa.Table, *, suffix: str) -> sa.Table:
        """A #temp table of this session. Its text columns take the database's collation: tempdb's
        may differ, and the MERGE would fail comparing keys ("cannot resolve the collation conflict")."""
        name = f"#_sync_stage_{target.name}"[: TEMP_NAME_LENGTH - len(suffix)] + suffix
        columns = [sa.Column(c.name, database_collation(c.type), nullable=True) for c in target.columns]
        return sa.Table(name, sa.MetaData(), *columns, info={"temporary": True})

    def bulk_load(self, conn: sa.Connection, staging: sa.Table, frame: pl.DataFrame) -> None:
        if frame.is_empty():
            return
        frame = frame.select([c.name for c in staging.columns if c.name in frame.columns])
        types = {c.name: c.type for c in staging.columns}
        raw = conn.connection.driver_connection
        if type(raw).__module__ != "pyodbc":
            # Other drivers (pymssql): multi-row VALUES within the parameter limit.
            for statement in values_statements(staging, odbc.to_parameters(frame, types)):
                conn.execute(statement)
            return
        statement = str(sa.insert(staging).compile(dialect=conn.dialect, column_keys=frame.columns))
        cursor = raw.cursor()  # type: ignore[union-attr]
        try:
            odbc.executemany(cursor, statement, frame, types)
        finally:
            cursor.close()

    # -- merging ---------------------------------------------------------------------------------
    def reload(self, conn: sa.Connection, target: sa.Table, fill: Callable[[sa.Table], int]) -> int:
        """DELETE, then the rows loaded straight into the target, in the caller's transaction:
        readers under row versioning (RCSI/SNAPSHOT) see the old rows until the commit, locking
        readers wait for it."""
        conn.execute(reload_delete(target))
        return fill(target)

    def fresh_table(self, conn: sa.Connection, target: sa.Table, *, several_batches: bool) -> sa.Table | None:
        """With mssql-python, a full load is bulk-copied into a committed heap first (`mssql_bulk`)."""
        if not mssql_reader.uses_driver(conn):
            return None
        return self.create_committed(conn, self.fresh_copy(target, keyed=False))

    def separate_staging(
        self, conn: sa.Connection, target: sa.Table, *, several_batches: bool
    ) -> sa.Table | None:
        """With mssql-python, an incremental of several batches is bulk-copied into a committed
        heap too (a #temp table is the session's, out of the bulk copy's reach); one batch goes
        into #temp inside the transaction, sparing a small load the bulk copy's own login."""
        return self.fresh_table(conn, target, several_batches=True) if several_batches else None

    def load_separately(self, conn: sa.Connection, dest: sa.Table, frames: Iterator[pl.DataFrame]) -> None:
        name = conn.dialect.identifier_preparer.format_table(dest)
        mssql_bulk.copy(conn.connection.driver_connection, dest, frames, table_name=name)

    def replace_from(self, target: sa.Table, fresh: sa.Table) -> list[sa.Executable]:
        """Under table locks: the DELETE takes the target at once, the INSERT from the heap is
        minimally logged (TABLOCK); its key check fails the commit on a duplicate."""
        _delete, insert, drop = super().replace_from(target, fresh)
        return [reload_delete(target), insert.with_hint("WITH (TABLOCK)"), drop]  # type: ignore[attr-defined]

    def upsert(
        self,
        conn: sa.Connection,
        target: sa.Table,
        staging: sa.Table,
        *,
        key: Sequence[str],
        updated_at: str | None,
    ) -> UpsertCounts:
        """One MERGE of the latest staged version per key, updating only the rows that changed;
        the counts come from one join before it."""
        changes, merge = upsert_statements(target, staging, key=key, updated_at=updated_at)
        counts = changes.count(conn)
        conn.execute(merge)
        return counts

    def compared(self, column: sa.ColumnElement[Any]) -> list[sa.ColumnElement[Any]]:
        """Text by its bytes: `=` and INTERSECT follow the collation (case- and accent-insensitive
        by default) and ignore trailing spaces. Binary values equal but for trailing 0x00 bytes
        compare equal too, so their lengths are compared as well
        (https://learn.microsoft.com/en-us/sql/t-sql/language-elements/equals-transact-sql)."""
        if isinstance(column.type, sqltypes.String):
            return [sa.func.datalength(column), sa.cast(column, mssql.VARBINARY())]
        if isinstance(column.type, sqltypes._Binary):
            return [sa.func.datalength(column), column]
        return [column]


def mssql_python_state(error: BaseException) -> str | None:
    """The SQLSTATE of an mssql-python error among those that decide a retry; None for another
    driver's error or another state.

    mssql-python keeps no SQLSTATE or native number on its exceptions, only the class and the text
    its own SQLSTATE table gives (`driver_error`), so the state is looked up in that same table.
    """
    if type(error).__module__ != "mssql_python.exceptions":
        return None
    from mssql_python.exceptions import sqlstate_to_exception  # the driver is there: it raised this

    for state in MSSQL_PYTHON_STATES:
        known = sqlstate_to_exception(state, "")
        if type(known) is type(error) and getattr(known, "driver_error", None) == getattr(
            error, "driver_error", ""
        ):
            return state
    return None


def decimal_digits(ct: ColumnType) -> tuple[int, int]:
    """DECIMAL(p, s) for a decimal; wider than 38 digits keeps the scale, unbounded gets (38, 10)."""
    if not ct.precision:
        return MAX_DIGITS, UNBOUNDED_DECIMAL_SCALE
    return min(ct.precision, MAX_DIGITS), min(ct.scale or 0, MAX_DIGITS)


def database_collation(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    if not isinstance(type_, sqltypes.String):
        return type_
    typed = copy.copy(type_)
    typed.collation = "DATABASE_DEFAULT"
    return typed


def _read_digits(type_: Any) -> int:
    """Fractional digits a source column delivers: its own, at most what pyodbc reads."""
    declared = type_.precision if type_.precision is not None else FRACTIONAL_DIGITS
    return min(declared, READ_DIGITS)


def applock_statement() -> sa.TextClause:
    return sa.text(
        "EXEC sp_getapplock @Resource = :resource, @LockMode = 'Exclusive', @LockOwner = 'Transaction'"
    )


def applock_mode_query() -> sa.TextClause:
    return sa.text("SELECT APPLOCK_MODE('public', :resource, 'Transaction')")


def values_per_statement(columns: int) -> int:
    """Rows of a multi-row VALUES insert that stay within SQL Server's parameter limit."""
    return max(1, min(MAX_VALUES_ROWS, USABLE_PARAMETERS // max(columns, 1)))


def values_statements(staging: sa.Table, values: pl.DataFrame) -> Iterator[sa.Insert]:
    for chunk in values.iter_slices(values_per_statement(values.width)):
        yield sa.insert(staging).values(chunk.to_dicts())


def reload_delete(target: sa.Table) -> sa.Delete:
    """TABLOCKX takes the table at once instead of escalating from millions of row locks."""
    return sa.delete(target).with_hint("WITH (TABLOCKX)")


def upsert_statements(
    target: sa.Table, staging: sa.Table, *, key: Sequence[str], updated_at: str | None
) -> tuple[StagedChanges, Merge]:
    """The deduplicated staged rows against the target (for the counts), and the MERGE of them."""
    latest = latest_per_key(staging, key=key, updated_at=updated_at)
    changes = staged_changes(latest, target, key=key, values_differ=DIALECT.values_differ)
    return changes, Merge(target, latest, key=key, changed=changes.differs)


DIALECT = MSSQLDialect()
