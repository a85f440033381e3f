"""PostgreSQL as source and cache: session temp staging loaded with COPY, ON CONFLICT upserts.

Errors are classified by SQLSTATE, except where libpq has none: a connection that fails while it
opens. libpq keeps the server's reply to the startup packet to itself, so psycopg, psycopg2 and
ADBC all raise it without a SQLSTATE. For an error without one (`_startup_refusal`), the message
decides: a reply from the server (libpq writes it as `SEVERITY:  text`, e.g. `FATAL:  password
authentication failed for user "alice"`) is a refusal, permanent, unless it names a server state
that clears up by itself (starting up, shutting down, in recovery, too many clients); libpq's own
failures (connection refused, timeout expired, server closed the connection) got no reply and
stay transient. A password the server asked for and was not given (`needs_password`) is permanent
too. Replies are read in English, the server's default language: where lc_messages translates
the states that clear up, a restart in progress fails at once instead of being retried.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import adbc_driver_manager
import polars as pl
import psycopg
import psycopg2  # the source side of a direct copy (source_copy_blocks)
import pyarrow as pa
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import psycopg2 as sa_psycopg2

from sync_assets.batches import cast_batch
from sync_assets.dialects.base import Capabilities, Dialect, Timeouts, driver_error
from sync_assets.dialects.pg_binary import encoder_for
from sync_assets.types import ColumnType, Kind

# PostgreSQL keeps microseconds (https://www.postgresql.org/docs/current/datatype-datetime.html).
MAX_FRACTIONAL_DIGITS = 6
# Retryable SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html): class 08
# connection exceptions; serialization failure, deadlock, lock timeout, statement timeout, admin
# shutdown / crash recovery / cannot connect now, too many connections, out of memory.
TRANSIENT_CLASSES = ("08",)
PROGRESS_BYTES = 64 * 2**20
COPY_BLOCK = 2**20  # bytes the source copy hands over at a time
# Connection arguments as SQLAlchemy's psycopg2 dialect derives them from a URL.
_PSYCOPG2 = sa_psycopg2.dialect()
INDEX_BUILD_MEMORY = "256MB"
_CREATED_IN_THIS_TRANSACTION = "sync_assets_created_in_this_transaction"  # Table.info key
# What refers to a table by OID or hangs off it, and so would not follow a rename swap.
_SWAP_BLOCKERS = sa.text("""
    SELECT (SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
             WHERE d.refobjid = c.oid AND r.ev_class <> c.oid)
         + (SELECT count(*) FROM pg_constraint f
             WHERE f.contype = 'f' AND (f.conrelid = c.oid OR f.confrelid = c.oid))
         + (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal)
         + (SELECT count(*) FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
         + (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
         + CASE WHEN c.relacl IS NULL AND NOT c.relrowsecurity THEN 0 ELSE 1 END
    FROM pg_class c WHERE c.oid = to_regclass(:table)
""")
TRANSIENT_STATES = frozenset(
    {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300", "53200"}
)
# Refusals no retry fixes (same appendix): invalid password (28P01), invalid authorization, i.e.
# no such role or no pg_hba.conf entry (28000), insufficient privilege (42501), no such database (3D000).
PERMANENT_STATES = frozenset({"28P01", "28000", "42501", "3D000"})
# libpq writes a server's error reply as "SEVERITY:  message", two spaces (fe-protocol3.c); its
# DETAIL and HINT lines follow in the same form.
_SERVER_REPLY = re.compile(r"\b(?:FATAL|PANIC|ERROR):  (.+)")
# Server replies to a connection attempt that clear up by themselves: the postmaster's
# canAcceptConnections() and InitPostgres()'s connection limits (SQLSTATEs 57P03, 53300, 57P01).
STARTUP_STATES_THAT_CLEAR_UP = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "sorry, too many clients already",
    "remaining connection slots are reserved",
    "too many connections for",
    "terminating connection",
    "canceling authentication due to timeout",
    "out of memory",
)
# libpq connection parameters (https://www.postgresql.org/docs/current/libpq-connect.html):
# an idle connection is probed after `keepalive` seconds, then every `keepalive` seconds, and
# declared dead after KEEPALIVE_PROBES unanswered probes.
KEEPALIVE_PROBES = 3
TIMEOUT_PARAMETERS = frozenset(
    {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"}
)


class PostgreSQLDialect(Dialect):
    name = "postgresql"
    capabilities = Capabilities(
        max_identifier_length=63,  # NAMEDATALEN - 1
        transactional_ddl=True,
        same_engine_copy=True,
        independent_reader=True,
    )

    def engine_options(self, url: sa.URL, *, role: str, timeouts: Timeouts) -> dict[str, Any]:
        # A timeout written in the URL's query (?connect_timeout=5) wins over the catalog's.
        limits = {k: v for k, v in libpq_timeouts(timeouts).items() if k not in url.query}
        return {"connect_args": {"application_name": f"sync_assets {role}", **limits}}

    def column_type(self, ct: ColumnType) -> sa.types.TypeEngine[Any]:
        if ct.kind is Kind.DATETIME:
            precision = min(ct.precision, MAX_FRACTIONAL_DIGITS) if ct.precision is not None else None
            return postgresql.TIMESTAMP(timezone=ct.timezone, precision=precision)
        if ct.kind is Kind.STRING:
            return sa.String(ct.length) if ct.length else sa.Text()
        if ct.kind is Kind.BINARY:
            return postgresql.BYTEA()
        return super().column_type(ct)

    def serialize_starts(self, conn: sa.Connection) -> None:
        # Self-conflicting, so starts take turns; readers of sync_log are not blocked.
        conn.execute(sa.text("LOCK TABLE sync_log IN SHARE ROW EXCLUSIVE MODE"))

    def is_transient(self, error: BaseException) -> bool:
        diagnostics = _diagnostics(error)
        if diagnostics is None:
            return super().is_transient(error)
        if self.is_permanent(error):
            return False
        sqlstate, operational, _ = diagnostics
        if sqlstate is None:
            # Failures to connect, or a connection dropped mid-query, come without a SQLSTATE.
            return operational
        return sqlstate.startswith(TRANSIENT_CLASSES) or sqlstate in TRANSIENT_STATES

    def is_permanent(self, error: BaseException) -> bool:
        diagnostics = _diagnostics(error)
        if diagnostics is None:
            return False
        sqlstate, _, message = diagnostics
        if sqlstate is not None:
            return sqlstate in PERMANENT_STATES
        pgconn = getattr(driver_error(error), "pgconn", None)  # psycopg's, on a failed connection
        return bool(getattr(pgconn, "needs_password", False)) or _startup_refusal(message)

    def bulk_load(self, conn: sa.Connection, staging: sa.Table, frame: pl.DataFrame) -> None:
        """Binary COPY where every column has an exact binary twin (`pg_binary`), else CSV COPY.

        A table this transaction created is loaded frozen, as the direct copy does.
        """
        if frame.is_empty():
            return
        columns = [staging.c[name] for name in frame.columns]
        binary = encoder_for(columns, frame.schema)
        options = ["FORMAT binary" if binary is not None else "FORMAT csv"]
        if staging.info.get(_CREATED_IN_THIS_TRANSACTION):
            options.append("FREEZE")
        statement = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
            sql.Identifier(staging.name),
            sql.SQL(", ").join(sql.Identifier(n) for n in frame.columns),
            sql.SQL(", ".join(options)),
        )
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            if binary is not None:
                for block in binary.encode(frame):
                    copy.write(block)
            else:
                buffer = io.BytesIO()
                to_copy_csv(frame).write_csv(buffer, include_header=False, null_value="")
                copy.write(buffer.getbuffer())

    def arrow_batches(
        self,
        source: sa.Connection,
        statement: sa.Select[Any],
        *,
        schema: dict[str, pl.DataType],
        table: str,
        batch_size: int,
    ) -> Iterator[pl.DataFrame]:
        """ADBC's record-batch stream: binary protocol to Arrow in C, memory flat per batch.

        ADBC sizes its batches in bytes (its default hint, 16 MiB), not by `batch_size` rows.
        ADBC takes no SQLAlchemy parameters, so the bounds are rendered as literals; numeric
        arrives as an opaque text extension type and is cast to exact decimals here, vectorised.
        """
        import adbc_driver_postgresql.dbapi as adbc

        url = source.engine.url.set(drivername="postgresql").update_query_dict(connection_timeouts(source))
        uri = url.render_as_string(hide_password=False)
        query = str(statement.compile(dialect=source.dialect, compile_kwargs={"literal_binds": True}))
        with adbc.connect(uri) as connection, connection.cursor() as cursor:
            cursor.execute(query)
            # The cursor must outlive its reader: a collected cursor closes the stream.
            for batch in cursor.fetch_record_batch():
                yield cast_batch(pl.from_arrow(_plain(batch)), schema, table=table)  # type: ignore[arg-type]

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
        format. The cache side runs in the sync's own transaction; the source side runs on its
        own connection and thread (`source_copy_blocks`), so reading overlaps loading.
        """
        # IN lists (the keys of a hash incremental) as one parameter per value.
        compiled = statement.compile(dialect=source.dialect, compile_kwargs={"render_postcompile": True})
        copy_out = f"COPY ({compiled.string}) TO STDOUT (FORMAT binary)"
        # Rows loaded into a table made by this transaction can be written frozen: the first reads
        # after a reload (the checks, the next daily's upsert) then set no hint bits on a million rows.
        options = "FORMAT binary, FREEZE" if dest.info.get(_CREATED_IN_THIS_TRANSACTION) else "FORMAT binary"
        copy_in = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
            sql.Identifier(dest.name),
            sql.SQL(", ").join(sql.Identifier(c.name) for c in dest.columns),
            sql.SQL(options),
        )
        writer = cache.connection.driver_connection
        copied, reported = 0, 0
        with (
            source_copy_blocks(
                source.engine.url, copy_out, compiled.params, options=connection_timeouts(source)
            ) as blocks,
            writer.cursor() as in_cursor,  # type: ignore[union-attr]
        ):
            with in_cursor.copy(copy_in) as into:
                for block in blocks:
                    into.write(block)
                    copied += len(block)
                    if copied - reported >= PROGRESS_BYTES:
                        reported = copied
                        log(f"{dest.name}: {copied / 2**20:,.0f} MiB copied")
            log(
                f"{dest.name}: {in_cursor.rowcount:,} rows copied between servers ({copied / 2**20:,.1f} MiB)"
            )
            return in_cursor.rowcount

    def reload(self, conn: sa.Connection, target: sa.Table, fill: Callable[[sa.Table], int]) -> int:
        """Load a fresh table, build its key and indexes once, then swap it in by renaming.

        Row-by-row index maintenance, and the unique checks against the old rows that a DELETE
        leaves behind, made DELETE + COPY several times slower than the COPY itself. All of this
        runs in the caller's transaction: readers see the old table until the commit, and the
        rename holds its lock only for an instant. A table with anything a rename would break
        (views, foreign keys, grants, triggers, policies, inheritance, extra indexes) takes the
        plain DELETE + COPY path.
        """
        if not self._swappable(conn, target):
            return super().reload(conn, target, fill)
        inspector = sa.inspect(conn)
        pk_name = inspector.get_pk_constraint(target.name)["name"]
        index_names = {tuple(i["column_names"]): i["name"] for i in inspector.get_indexes(target.name)}
        fresh = sa.Table(
            f"{target.name}__sync_new"[:63],
            sa.MetaData(),
            *[sa.Column(c.name, c.type) for c in target.columns],
        )
        fresh.create(conn)
        fresh.info[_CREATED_IN_THIS_TRANSACTION] = True
        rows = fill(fresh)
        # The key and index builds sort the whole table: in memory, not in temp files (the default
        # 64MB spills at about a million rows). SET LOCAL ends with this transaction.
        conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        fresh_pk = f"{fresh.name}_pkey"[:63]
        key = [fresh.c[c.name] for c in target.primary_key.columns]
        conn.execute(sa.schema.AddConstraint(sa.PrimaryKeyConstraint(*key, name=fresh_pk)))
        built = []
        for index in target.indexes:
            name = f"{fresh.name}_{len(built)}"[:63]
            sa.Index(name, *[fresh.c[c.name] for c in index.columns], unique=bool(index.unique)).create(conn)
            built.append((name, index_names.get(tuple(c.name for c in index.columns), index.name)))
        quote = conn.dialect.identifier_preparer.quote
        conn.execute(sa.schema.DropTable(target))
        conn.exec_driver_sql(f"ALTER TABLE {quote(fresh.name)} RENAME TO {quote(target.name)}")
        conn.exec_driver_sql(f"ALTER INDEX {quote(fresh_pk)} RENAME TO {quote(pk_name)}")
        for temporary, final in built:
            conn.exec_driver_sql(f"ALTER INDEX {quote(temporary)} RENAME TO {quote(final)}")
        return rows

    def _swappable(self, conn: sa.Connection, target: sa.Table) -> bool:
        """Only a table that is nothing but rows, its key and the indexes sync_assets made."""
        quoted = conn.dialect.identifier_preparer.quote(target.name)
        blockers = conn.execute(_SWAP_BLOCKERS, {"table": quoted}).scalar()
        indexes = {tuple(i["column_names"]) for i in sa.inspect(conn).get_indexes(target.name)}
        ours = {tuple(c.name for c in index.columns) for index in target.indexes}
        return blockers == 0 and indexes == ours

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)


def libpq_timeouts(timeouts: Timeouts) -> dict[str, int]:
    """The catalog connection's timeouts as libpq parameters (whole seconds; libpq takes no less)."""
    idle = max(1, round(timeouts.keepalive))
    return {
        "connect_timeout": max(1, math.ceil(timeouts.connect)),
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": idle,
        "keepalives_count": KEEPALIVE_PROBES,
    }


def connection_timeouts(conn: sa.Connection) -> dict[str, str]:
    """The timeouts the sync's own connection to this server was opened with, for the further
    connections the fast paths open to it (the ADBC reader, the source side of a copy)."""
    raw: Any = conn.connection.driver_connection
    # psycopg 3 reports them through `info`; a `postgresql+psycopg2://` URL gives psycopg2's.
    getter = getattr(raw.info, "get_parameters", None) or raw.get_dsn_parameters
    return {k: v for k, v in getter().items() if k in TIMEOUT_PARAMETERS}


def _diagnostics(error: BaseException) -> tuple[str | None, bool, str] | None:
    """(SQLSTATE, whether it is an OperationalError, message) of a psycopg, psycopg2 or ADBC error;
    None for any other error."""
    orig = driver_error(error)
    if isinstance(orig, psycopg.Error):
        return orig.sqlstate, isinstance(orig, psycopg.OperationalError), str(orig)
    if isinstance(orig, psycopg2.Error):
        return orig.pgcode, isinstance(orig, psycopg2.OperationalError), str(orig)
    if isinstance(orig, adbc_driver_manager.Error):
        return orig.sqlstate, isinstance(orig, adbc_driver_manager.OperationalError), str(orig)
    return None


def _startup_refusal(message: str) -> bool:
    """Whether libpq's message of a failed connection holds a server reply that does not clear up
    by itself (the module docstring says why this reads text)."""
    replies = [m.group(1) for m in _SERVER_REPLY.finditer(message)]
    return any(not reply.startswith(STARTUP_STATES_THAT_CLEAR_UP) for reply in replies)


def _plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Extension arrays (ADBC's opaque numeric) replaced by their text storage."""
    columns = [c.storage if isinstance(c, pa.ExtensionArray) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


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


@contextmanager
def source_copy_blocks(
    url: sa.URL, query: str, params: Mapping[str, Any], *, options: Mapping[str, str] | None = None
) -> Iterator[Iterator[bytes]]:
    """The output of `COPY ... TO STDOUT` on the source, as blocks of COPY_BLOCK bytes.

    psycopg 3 hands every row to Python; psycopg2's `copy_expert` runs the same loop in C into an
    OS pipe widened to COPY_BLOCK, on its own thread and connection, about as fast as a psql pipe
    (figures: docs/performance.md, "Measured choices"). Bounds are bound client-side (`mogrify`),
    as COPY takes no server-side parameters. `options` are further libpq parameters (the sync's
    timeouts).

    A failure on the source side ends the blocks with its error; a failure on the consumer's side
    cancels the source query, and the producer stops on the closed pipe.
    """
    args, kwargs = _PSYCOPG2.create_connect_args(url.set(drivername="postgresql+psycopg2"))
    kwargs = {**kwargs, **(options or {})}
    connection = psycopg2.connect(*args, application_name="sync_assets source copy", **kwargs)
    read_fd, write_fd = os.pipe()
    _widen(write_fd)
    pipe_in = os.fdopen(read_fd, "rb", buffering=0)
    pipe_out = os.fdopen(write_fd, "wb", buffering=COPY_BLOCK)
    failures: list[BaseException] = []

    def produce() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.copy_expert(cursor.mogrify(query, dict(params)), pipe_out, size=COPY_BLOCK)
        except BaseException as err:  # handed to the consumer
            failures.append(err)
        finally:
            with contextlib.suppress(OSError):  # the consumer is gone: nothing left to flush to
                pipe_out.close()

    def blocks() -> Iterator[bytes]:
        while block := pipe_in.read(COPY_BLOCK):
            yield block
        producer.join()
        if failures:
            raise failures[0]

    producer = threading.Thread(target=produce, name="sync_assets source copy", daemon=True)
    producer.start()
    try:
        yield blocks()
    except BaseException:
        connection.cancel()
        raise
    finally:
        pipe_in.close()  # a producer still writing gets EPIPE
        producer.join()
        connection.close()


def _widen(pipe_fd: int) -> None:
    """Let the pipe hold COPY_BLOCK bytes (Linux; the default 64 KiB elsewhere).

    With 64 KiB between them, the source stalled whenever the cache side waited on its server
    (docs/performance.md, "Measured choices").
    """
    try:
        import fcntl

        fcntl.fcntl(pipe_fd, fcntl.F_SETPIPE_SZ, COPY_BLOCK)
    except (ImportError, AttributeError, OSError):  # not Linux, or above fs.pipe-max-size
        pass


DIALECT = PostgreSQLDialect()
