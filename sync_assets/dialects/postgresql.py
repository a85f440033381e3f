"""PostgreSQL as source and cache: session temp staging loaded with COPY, ON CONFLICT upserts."""

from __future__ import annotations

import io
from typing import Any

import polars as pl
import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql

from sync_assets.dialects.base import Capabilities, Dialect, driver_error
from sync_assets.sync.types import ColumnType, Kind

# PostgreSQL keeps microseconds (https://www.postgresql.org/docs/current/datatype-datetime.html).
MAX_FRACTIONAL_DIGITS = 6
# Retryable SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html): class 08
# connection exceptions; serialization failure, deadlock, lock timeout, statement timeout, admin
# shutdown / crash recovery / cannot connect now, too many connections, out of memory.
TRANSIENT_CLASSES = ("08",)
PROGRESS_BYTES = 64 * 2**20
TRANSIENT_STATES = frozenset(
    {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300", "53200"}
)


class PostgreSQLDialect(Dialect):
    name = "postgresql"
    capabilities = Capabilities(
        max_identifier_length=63,  # NAMEDATALEN - 1
        transactional_ddl=True,
        temp_tables_per_session=True,
        same_engine_copy=True,
    )

    def engine_options(self, url: sa.URL, *, role: str) -> dict[str, Any]:
        return {"connect_args": {"application_name": f"sync_assets {role}"}}

    def column_type(self, ct: ColumnType) -> sa.types.TypeEngine[Any]:
        if ct.kind is Kind.DATETIME:
            precision = min(ct.precision, MAX_FRACTIONAL_DIGITS) if ct.precision is not None else None
            return postgresql.TIMESTAMP(timezone=ct.timezone, precision=precision)
        if ct.kind is Kind.STRING:
            return sa.String(ct.length) if ct.length else sa.Text()
        if ct.kind is Kind.BINARY:
            return postgresql.BYTEA()
        return super().column_type(ct)

    def is_transient(self, error: BaseException) -> bool:
        orig = driver_error(error)
        if not isinstance(orig, psycopg.Error):
            return super().is_transient(error)
        if orig.sqlstate is None:
            # Failures to connect, or a connection dropped mid-query, come without a SQLSTATE.
            return isinstance(orig, psycopg.OperationalError)
        return orig.sqlstate.startswith(TRANSIENT_CLASSES) or orig.sqlstate in TRANSIENT_STATES

    def bulk_load(self, conn: sa.Connection, staging: sa.Table, frame: pl.DataFrame) -> None:
        if frame.is_empty():
            return
        buffer = io.BytesIO()
        to_copy_csv(frame).write_csv(buffer, include_header=False, null_value="")
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            sql.Identifier(staging.name), sql.SQL(", ").join(sql.Identifier(n) for n in frame.columns)
        )
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            copy.write(buffer.getbuffer())

    def copy_rows(
        self,
        source: sa.Connection,
        statement: sa.Select[Any],
        cache: sa.Connection,
        dest: sa.Table,
        *,
        log: Any,
    ) -> int:
        """Binary COPY out of the source piped into binary COPY into the cache: no decoding at all.

        The statement casts every column to its cache type, so both ends agree on the binary
        format. COPY takes no server-side parameters; psycopg binds the watermark bounds itself.
        """
        compiled = statement.compile(dialect=source.dialect)
        copy_out = f"COPY ({compiled.string}) TO STDOUT (FORMAT binary)"
        copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            sql.Identifier(dest.name), sql.SQL(", ").join(sql.Identifier(c.name) for c in dest.columns)
        )
        reader = source.connection.driver_connection
        writer = cache.connection.driver_connection
        copied, reported = 0, 0
        with reader.cursor() as out_cursor, writer.cursor() as in_cursor:  # type: ignore[union-attr]
            with out_cursor.copy(copy_out, compiled.params) as out, in_cursor.copy(copy_in) as into:
                for chunk in out:
                    into.write(chunk)
                    copied += len(chunk)
                    if copied - reported >= PROGRESS_BYTES:
                        reported = copied
                        log(f"{dest.name}: {copied / 2**20:,.0f} MiB copied")
            log(
                f"{dest.name}: {in_cursor.rowcount:,} rows copied between servers ({copied / 2**20:,.1f} MiB)"
            )
            return in_cursor.rowcount

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)


def to_copy_csv(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast a batch, vectorised, to the text COPY reads back exactly (NULL unquoted, '' quoted)."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            exprs.append(col.dt.strftime("%Y-%m-%d %H:%M:%S.%6f" + ("%:z" if dtype.time_zone else "")))
        elif dtype == pl.Time:
            exprs.append(col.dt.strftime("%H:%M:%S.%6f"))
        elif dtype == pl.Binary:
            exprs.append(pl.concat_str(pl.lit("\\x"), col.bin.encode("hex")))
        else:
            exprs.append(col)
    return frame.select(exprs)


DIALECT = PostgreSQLDialect()
