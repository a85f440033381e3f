"""SAP ASE (Sybase) as a source, through sqlalchemy-sybase and pyodbc (FreeTDS or SAP's ODBC driver).

URL: `sybase+pyodbc://user:${PW}@host:5000/db?driver=FreeTDS&TDS_Version=5.0`, or a DSN as host.
Install with `pip install sync_assets[sybase]`; sqlalchemy-sybase and pyodbc are imported by
SQLAlchemy when an engine is made, so this module imports without them.

Reading streams: with `arrow_odbc: true` through arrow-odbc's Arrow batches (`odbc_reader`), else
rows. ASE has no server-side cursor through pyodbc, but `yield_per` makes SQLAlchemy
pull `fetchmany(batch_size)` from the DBAPI cursor (BufferedRowCursorFetchStrategy), and the ODBC
driver reads the TDS stream as rows are fetched, so memory stays one batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.sql import sqltypes

from sync_assets.dialects import odbc, odbc_reader
from sync_assets.dialects.base import Capabilities, SourceDialect, Timeouts, driver_error
from sync_assets.dialects.deadline import connect_within
from sync_assets.types import ColumnType, Kind, from_sqlalchemy

# Retryable ASE message numbers; the retryable SQLSTATEs are ODBC's, in odbc.py
# (https://help.sap.com/docs/SAP_ASE, "Troubleshooting: Error Messages"):
# 1204 out of locks, 1205 deadlock victim, 12205 lock wait timeout. FreeTDS client errors
# (include/sybdb.h): 20003 SYBETIME, 20004 SYBEREAD, 20006 SYBEWRIT, 20009 SYBECONN, 20017 SYBESEOF.
TRANSIENT_ERRORS = frozenset({1204, 1205, 12205, 20003, 20004, 20006, 20009, 20017})
# Refusals no retry fixes: ASE 4002 login failed (bad name or password, locked or expired login:
# ASE does not say which), FreeTDS 20014 TDSEPWD "Login incorrect". ASE's 4001 (cannot open the
# default database) is left to the SQLSTATE: SAP says to retry it while the database recovers.
PERMANENT_ERRORS = frozenset({4002, 20014})
LOGOUT_GRACE_SECONDS = 5


class BIGDATETIME(sqltypes.DateTime):
    __visit_name__ = "BIGDATETIME"


class BIGTIME(sqltypes.Time):
    __visit_name__ = "BIGTIME"


class SMALLDATETIME(sqltypes.DateTime):
    __visit_name__ = "SMALLDATETIME"


class UNSIGNED_SMALLINT(sqltypes.Integer):
    __visit_name__ = "UNSIGNED_SMALLINT"


class UNSIGNED_INT(sqltypes.Integer):
    __visit_name__ = "UNSIGNED_INT"


class UNSIGNED_BIGINT(sqltypes.Integer):
    __visit_name__ = "UNSIGNED_BIGINT"


class ROWVERSION(sqltypes.LargeBinary):
    """ASE `timestamp`: an 8-byte row version, not a point in time."""

    __visit_name__ = "TIMESTAMP"


# What sqlalchemy-sybase 2.0.0 reflects wrongly: bigdatetime, bigtime, univarchar and sysname
# unknown (NULL type), smalldatetime as DATETIME, unsigned types as signed ones (under names
# systypes does not use), double precision as NUMERIC, the row-version `timestamp` as a DateTime.
REFLECTED_TYPES: dict[str, type[sa.types.TypeEngine[Any]]] = {
    "bigdatetime": BIGDATETIME,
    "bigtime": BIGTIME,
    "smalldatetime": SMALLDATETIME,
    "usmallint": UNSIGNED_SMALLINT,
    "unsigned smallint": UNSIGNED_SMALLINT,
    "uint": UNSIGNED_INT,
    "unsigned int": UNSIGNED_INT,
    "ubigint": UNSIGNED_BIGINT,
    "unsigned bigint": UNSIGNED_BIGINT,
    "double precision": sqltypes.Double,
    "double": sqltypes.Double,
    "timestamp": ROWVERSION,
    "sysname": sqltypes.VARCHAR,
    "longsysname": sqltypes.VARCHAR,
}


class SybaseDialect(SourceDialect):
    name = "sybase"
    capabilities = Capabilities(
        max_identifier_length=255,  # ASE 15+; 30 before
        transactional_ddl=False,  # DDL in a transaction needs 'ddl in tran'
        max_parameters=2_048,
        max_decimal_precision=38,
        max_fractional_digits=6,  # bigdatetime
        time_zones=False,
        # arrow-odbc's reader (where the connection opts in) reads on a connection of its own.
        independent_reader=True,
    )

    def engine_options(self, url: sa.URL, *, role: str, timeouts: Timeouts) -> dict[str, Any]:
        # pyodbc's `timeout` is the login timeout, which FreeTDS also applies to the TCP connect;
        # FreeTDS turns keep-alive on for every socket itself (src/tds/net.c: 40 s idle, then
        # every 2 s), with nothing to set. pyodbc adds unknown keywords to the connection string;
        # APP names the session in sysprocesses.
        return {
            "connect_args": {"timeout": max(1, math.ceil(timeouts.connect)), "APP": f"sync_assets {role}"}
        }

    def prepare_engine(self, engine: sa.Engine, *, role: str) -> None:
        teach_reflection(engine.dialect)

        @sa.event.listens_for(engine, "do_connect")
        def _bounded(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            # FreeTDS (1.3) reports a login timeout over TDS 5.0, then waits for ever for the
            # server to acknowledge its logout (tds_disconnect retries every 5 s); the grace
            # lets its own error through where it returns.
            timeout = cparams.get("timeout")
            return connect_within(
                lambda: dialect.connect(*cargs, **cparams), timeout, grace=LOGOUT_GRACE_SECONDS
            )

    def arrow_batches(
        self,
        source: sa.Connection,
        statement: sa.Select[Any],
        *,
        schema: dict[str, pl.DataType],
        table: str,
        batch_size: int,
    ) -> Iterator[pl.DataFrame] | None:
        """arrow-odbc's reader where the connection opts in (`arrow_odbc: true`); else rows."""
        return odbc_reader.arrow_batches(source, statement, schema=schema, table=table, batch_size=batch_size)

    def source_type(self, type_: sa.types.TypeEngine[Any], *, table: str, column: str) -> ColumnType:
        exact = _exact_type(type_)
        return exact if exact is not None else from_sqlalchemy(type_, table=table, column=column)

    def is_transient(self, error: BaseException) -> bool:
        if self.is_permanent(error):
            return False
        return bool(odbc.is_transient_error(driver_error(error), TRANSIENT_ERRORS)) or super().is_transient(
            error
        )

    def is_permanent(self, error: BaseException) -> bool:
        return odbc.is_permanent_error(driver_error(error), PERMANENT_ERRORS, TRANSIENT_ERRORS)


def teach_reflection(dialect: sa.Dialect) -> None:
    """Give this engine's sqlalchemy-sybase dialect the ASE type names it lacks (instance only)."""
    from sqlalchemy_sybase import base as ase

    names = dialect.ischema_names  # type: ignore[attr-defined]
    dialect.ischema_names = {**names, **REFLECTED_TYPES, "univarchar": ase.UNIVARCHAR}  # type: ignore[attr-defined]


def _exact_type(t: sa.types.TypeEngine[Any]) -> ColumnType | None:
    """ASE types the generic mapping would get wrong (or refuse); None for the rest."""
    from sqlalchemy_sybase import base as ase

    simple: list[tuple[type[Any], ColumnType]] = [
        (ase.MONEY, ColumnType(Kind.DECIMAL, precision=19, scale=4)),
        (ase.SMALLMONEY, ColumnType(Kind.DECIMAL, precision=10, scale=4)),
        (ase.BIT, ColumnType(Kind.BOOLEAN)),
        (ase.TINYINT, ColumnType(Kind.INTEGER, bits=16)),  # unsigned, 0..255
        (UNSIGNED_SMALLINT, ColumnType(Kind.INTEGER, bits=32)),
        (UNSIGNED_INT, ColumnType(Kind.INTEGER, bits=64)),
        (UNSIGNED_BIGINT, ColumnType(Kind.DECIMAL, precision=20, scale=0)),
        (ROWVERSION, ColumnType(Kind.BINARY, length=8)),
        (SMALLDATETIME, ColumnType(Kind.DATETIME, precision=0)),  # to the minute
        (BIGDATETIME, ColumnType(Kind.DATETIME, precision=6)),
        (BIGTIME, ColumnType(Kind.TIME, precision=6)),
        (sqltypes.DateTime, ColumnType(Kind.DATETIME, precision=3)),  # 1/300 s
        (sqltypes.Time, ColumnType(Kind.TIME, precision=3)),
    ]
    return next((ct for cls, ct in simple if isinstance(t, cls)), None)


DIALECT = SybaseDialect()
