"""DuckDB as cache and source: batches loaded from Arrow natively, ON CONFLICT upserts.

duckdb-engine derives its SQLAlchemy dialect from PostgreSQL's, whose reflection queries
(pg_collation, REGCLASS casts) DuckDB does not answer under SQLAlchemy 2.1, and whose
autoincrement is SERIAL, which DuckDB lacks. `DuckDBReflectingDialect` answers reflection from
DuckDB's own catalog functions and uses sequences; it is registered under the `duckdb` URL
scheme when sync_assets.dialects is imported, so `duckdb:///path.duckdb` URLs get it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import duckdb_engine
import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import default
from sqlalchemy.ext.compiler import compiles

from sync_assets.batches import cast_batch
from sync_assets.dialects.base import Capabilities, Dialect, Timeouts, driver_error
from sync_assets.errors import UnsupportedType
from sync_assets.types import ColumnType, Kind, from_sqlalchemy

# A DuckDB file has one writing process at a time; a second one fails to open it at once
# ("Could not set lock on file"). Waiting for it beats failing, like SQLite's busy timeout.
LOCK_WAIT_SECONDS = 300
MIN_MEMORY_MB = 256
# DuckDB's row group: a full load commits one at a time (docs/performance.md, "Measured choices").
ROW_GROUP_ROWS = 122_880
MEMORY_MB_PER_THREAD = 128
# While a sync streams one table out: a plain scan pins about a block (256 KiB) per column and
# thread (OutOfMemory below 100-130 KiB each, 20 and 251 columns, 2-16 threads); the rest of the
# pool only kept blocks already read.
MIN_SCAN_MEMORY_MB = 64
SCAN_KIB_PER_COLUMN_AND_THREAD = 512
_BATCH_VIEW = "_sync_batch"
_SHOWN_BYTES = re.compile(r"([0-9.]+)\s*(bytes|KiB|MiB|GiB|TiB|KB|MB|GB|TB)")
_BYTE_UNITS = {
    "bytes": 1,
    **{unit: 1024 ** (i + 1) for i, unit in enumerate(("KiB", "MiB", "GiB", "TiB"))},
    **{unit: 1000 ** (i + 1) for i, unit in enumerate(("KB", "MB", "GB", "TB"))},
}
_INDEXES = sa.text(
    "SELECT index_name FROM duckdb_indexes() WHERE schema_name = :schema AND table_name = :table"
)
# Foreign keys from or to the table: DROP TABLE would fail, or break them.
_REFERENCES = sa.text(
    "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'FOREIGN KEY' "
    "AND schema_name = :schema AND (table_name = :table OR referenced_table = :table)"
)


class TIMESTAMP_NS(sa.DateTime):
    """DuckDB's nanosecond timestamp."""

    __visit_name__ = "TIMESTAMP_NS"
    precision = 9


@compiles(TIMESTAMP_NS)
def _timestamp_ns(element: TIMESTAMP_NS, compiler: Any, **kw: Any) -> str:
    return "TIMESTAMP_NS"


_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")
_SIMPLE_TYPES: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
    "BOOLEAN": sa.Boolean,
    "TINYINT": sa.SmallInteger,
    "SMALLINT": sa.SmallInteger,
    "UTINYINT": sa.SmallInteger,
    "INTEGER": sa.Integer,
    "USMALLINT": sa.Integer,
    "BIGINT": sa.BigInteger,
    "UINTEGER": sa.BigInteger,
    "UBIGINT": lambda: sa.Numeric(20, 0),
    "HUGEINT": lambda: sa.Numeric(38, 0),
    "UHUGEINT": lambda: sa.Numeric(39, 0),
    "FLOAT": sa.Float,
    "DOUBLE": sa.Double,
    "VARCHAR": sa.String,
    "BLOB": sa.LargeBinary,
    "DATE": sa.Date,
    "TIME": sa.Time,
    "TIMESTAMP": lambda: postgresql.TIMESTAMP(precision=6),
    "TIMESTAMP_MS": lambda: postgresql.TIMESTAMP(precision=3),
    "TIMESTAMP_S": lambda: postgresql.TIMESTAMP(precision=0),
    "TIMESTAMP_NS": TIMESTAMP_NS,
    "TIMESTAMP WITH TIME ZONE": lambda: postgresql.TIMESTAMP(timezone=True, precision=6),
    "UUID": lambda: sa.Uuid(as_uuid=False),
}


def reflected_type(data_type: str) -> sa.types.TypeEngine[Any]:
    """A DuckDB type name as duckdb_columns() spells it, as a SQLAlchemy type (NullType if unknown)."""
    if match := _DECIMAL.fullmatch(data_type):
        return sa.Numeric(int(match[1]), int(match[2]))
    factory = _SIMPLE_TYPES.get(data_type)
    return factory() if factory else sa.types.NullType()


class _DDLCompiler(duckdb_engine.Dialect.ddl_compiler):  # type: ignore[name-defined,misc]
    def get_column_specification(self, column: sa.Column[Any], **kw: Any) -> str:
        """An autoincrement key takes its Sequence's nextval() where PostgreSQL would say SERIAL."""
        sequence = column.default
        if isinstance(sequence, sa.Sequence) and column is column.table._autoincrement_column:
            kind = self.dialect.type_compiler_instance.process(column.type)
            next_value = f"nextval('{self.preparer.format_sequence(sequence)}')"
            spec = f"{self.preparer.format_column(column)} {kind} DEFAULT {next_value}"
            return spec if column.nullable else f"{spec} NOT NULL"
        return super().get_column_specification(column, **kw)


class _Preparer(duckdb_engine.DuckDBIdentifierPreparer):
    """Quotes every DuckDB keyword that is not free to be a column name unquoted (e.g. `at`)."""

    def __init__(self, dialect: Any, **kwargs: Any) -> None:
        super().__init__(dialect, **kwargs)
        query = "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'"
        self.reserved_words.update(name for (name,) in duckdb.execute(query).fetchall())


class DuckDBReflectingDialect(duckdb_engine.Dialect):
    """duckdb-engine with reflection from duckdb_columns()/duckdb_constraints()/duckdb_indexes()."""

    name = "duckdb"
    sequences_optional = False  # DuckDB has no SERIAL: autoincrement keys take their Sequence
    ddl_compiler = _DDLCompiler
    preparer = _Preparer
    supports_statement_cache = True  # its compilers are PostgreSQL's, which cache; duckdb-engine opts out
    supports_native_decimal = True  # DuckDB hands out Decimals; don't round them through float

    # The PostgreSQL multi-table reflection queries fail on DuckDB: reflect one table at a time.
    get_multi_columns = default.DefaultDialect.get_multi_columns
    get_multi_pk_constraint = default.DefaultDialect.get_multi_pk_constraint
    get_multi_indexes = default.DefaultDialect.get_multi_indexes
    get_multi_foreign_keys = default.DefaultDialect.get_multi_foreign_keys
    get_multi_unique_constraints = default.DefaultDialect.get_multi_unique_constraints
    get_multi_check_constraints = default.DefaultDialect.get_multi_check_constraints
    get_multi_table_comment = default.DefaultDialect.get_multi_table_comment
    get_multi_table_options = default.DefaultDialect.get_multi_table_options

    def _catalog(self, connection: sa.Connection, function: str, table: str, schema: str | None) -> Any:
        statement = sa.text(
            f"SELECT * FROM {function}() WHERE table_name = :table "
            "AND (schema_name = :schema OR (:schema IS NULL AND schema_name IN ('main', 'temp')))"
        )
        return connection.execute(statement, {"table": table, "schema": schema}).mappings().all()

    def has_table(
        self, connection: sa.Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> bool:
        return bool(self._catalog(connection, "duckdb_tables", table_name, schema))

    def get_columns(
        self, connection: sa.Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        rows = self._catalog(connection, "duckdb_columns", table_name, schema)
        if not rows:
            raise sa.exc.NoSuchTableError(table_name)
        return [
            {
                "name": row["column_name"],
                "type": reflected_type(row["data_type"]),
                "nullable": row["is_nullable"],
                "default": row["column_default"],
                "autoincrement": False,
            }
            for row in sorted(rows, key=lambda r: r["column_index"])
        ]

    def get_pk_constraint(
        self, connection: sa.Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        rows = self._catalog(connection, "duckdb_constraints", table_name, schema)
        for row in rows:
            if row["constraint_type"] == "PRIMARY KEY":
                return {"constrained_columns": list(row["constraint_column_names"]), "name": None}
        return {"constrained_columns": [], "name": None}

    def get_indexes(
        self, connection: sa.Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        rows = self._catalog(connection, "duckdb_indexes", table_name, schema)
        return [
            {
                "name": row["index_name"],
                "column_names": _index_columns(row["expressions"]),
                "unique": bool(row["is_unique"]),
            }
            for row in rows
        ]

    def get_foreign_keys(self, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        return []

    def get_unique_constraints(self, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        return []

    def get_check_constraints(self, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        return []

    def get_table_comment(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return {"text": None}

    def get_table_options(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return {}


def _earlier_watermark_index(target: sa.Table) -> set[str]:
    """The watermark index earlier releases built on a DuckDB cache table: it goes with the old
    table when a reload swaps the new one in."""
    updated_at = target.info.get("updated_at")
    return {f"ix_{target.name}_{updated_at}"} if updated_at else set()


def _index_columns(expressions: Any) -> list[str]:
    """duckdb_indexes() lists an index's columns as expressions, e.g. ['"updated_at"']."""
    items = expressions if isinstance(expressions, list) else str(expressions).strip("[]").split(",")
    return [str(item).strip().strip("'").strip('"') for item in items]


def memory_limit() -> str:
    """DuckDB's buffer pool for our connections: its default (80% of RAM) kept every block a sync
    had scanned or written, so a process grew with the table (docs/performance.md); DuckDB's
    guidance is about 125 MB per thread for heavier queries."""
    return f"{_memory_mb()}MB"


def _memory_mb() -> int:
    return max(MIN_MEMORY_MB, MEMORY_MB_PER_THREAD * (os.cpu_count() or 1))


def scan_memory_limit(*, threads: int, columns: int) -> str | None:
    """The pool for a plain scan of `columns` columns; None where it would not be smaller."""
    mb = max(MIN_SCAN_MEMORY_MB, -(-SCAN_KIB_PER_COLUMN_AND_THREAD * columns * threads // 1024))
    return f"{mb}MB" if mb < _memory_mb() else None


def _cut_at(frames: Iterator[pl.DataFrame], every: int) -> Iterator[tuple[pl.DataFrame, bool]]:
    """The frames, cut (zero-copy slices) where the rows so far reach a multiple of `every`, each
    with whether it ends such a stretch."""
    pending = 0
    for frame in frames:
        while pending + frame.height >= every:
            head = every - pending
            yield frame.slice(0, head), True
            frame, pending = frame.slice(head), 0
        if frame.height:
            pending += frame.height
            yield frame, False


def _pool_bytes(raw: Any) -> int:
    """The connection's memory_limit in bytes (DuckDB shows it as text, such as '244.1 MiB')."""
    (shown,) = raw.execute("SELECT current_setting('memory_limit')").fetchone()
    match = _SHOWN_BYTES.fullmatch(shown.strip())
    if match is None:
        return _memory_mb() * 1024 * 1024
    return int(float(match[1]) * _BYTE_UNITS[match[2]])


def _index_bytes(raw: Any) -> int:
    """What DuckDB's ART indexes hold in memory now."""
    (held,) = raw.execute(
        "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag = 'ART_INDEX'"
    ).fetchone()
    return int(held)


def _out_of_memory(error: BaseException) -> bool:
    """DuckDB's OutOfMemory, also as the OSError pyarrow raises for it from a stream's batch."""
    return isinstance(error, duckdb.OutOfMemoryException) or (
        isinstance(error, OSError) and str(error).startswith("Out of Memory Error")
    )


# DuckDB files this process opened as a cache. DuckDB keeps one instance per file and process,
# and its memory_limit is the instance's: a scan of a file that is also a cache must leave it be.
_cache_files: set[str] = set()


def _file_of(url: sa.URL) -> str | None:
    """The database file of a `duckdb:///` URL; None in memory, where the pool holds the data."""
    database = url.database
    if not database or database == ":memory:" or ":" in database.split("/", 1)[0]:
        return None  # also `md:` and other non-file names
    return os.path.realpath(os.path.expanduser(database))


@contextlib.contextmanager
def _scan_memory(source: sa.Connection, statement: sa.Select[Any]) -> Iterator[bool]:
    """A plain scan of one table under a smaller buffer pool, restored after it; whether it is.

    Left at the connection's cap, the pool kept every block scanned, so a sync's memory grew with
    the table up to that cap (docs/performance.md). Not for a catalog query or a view (they may
    sort or join), a URL that sets its own memory_limit, or a file this process also uses as a
    cache.
    """
    froms = statement.get_final_froms()
    path = _file_of(source.engine.url)
    if (
        len(froms) != 1
        or not isinstance(froms[0], sa.Table)
        or "memory_limit" in source.engine.url.query
        or path is None
        or path in _cache_files
    ):
        yield False
        return
    raw = source.connection.driver_connection
    # Cursors of their own: the connection's last result may be unread, the scan's may have failed.
    with raw.duplicate() as cursor:  # type: ignore[union-attr]
        (threads,) = cursor.execute("SELECT current_setting('threads')").fetchone()
        limit = scan_memory_limit(threads=int(threads), columns=len(statement.selected_columns))
        if limit is not None and not _is_base_table(cursor, froms[0]):
            limit = None  # a view may sort, group or join
        if limit is not None:
            try:
                cursor.execute(f"SET memory_limit = '{limit}'")
            except duckdb.OutOfMemoryException:
                limit = None  # more of the pool is held now than the smaller one would take
    if limit is None:
        yield False
        return
    try:
        yield True
    finally:
        # Closed already: the read-ahead thread can end a stopped sync's scan after the engine was
        # disposed, and DuckDB's instance and its setting with it.
        with contextlib.suppress(duckdb.ConnectionException), raw.duplicate() as cursor:  # type: ignore[union-attr]
            cursor.execute(f"SET memory_limit = '{memory_limit()}'")


def _is_base_table(cursor: Any, table: sa.Table) -> bool:
    (count,) = cursor.execute(
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE table_name = ? AND schema_name = coalesce(?, current_schema())",
        [table.name, table.schema],
    ).fetchone()
    return bool(count)


def _record_batches(
    source: sa.Connection,
    sql: str,
    params: list[Any],
    *,
    schema: dict[str, pl.DataType],
    table: str,
    batch_size: int,
) -> Iterator[pl.DataFrame]:
    # A cursor of its own: DuckDB refuses new work on a connection whose last result (the
    # max-watermark query) was not read to its end.
    with source.connection.driver_connection.duplicate() as cursor:  # type: ignore[union-attr]
        for batch in cursor.sql(sql, params=params).to_arrow_reader(batch_size):
            yield cast_batch(pl.from_arrow(batch), schema, table=table)  # type: ignore[arg-type]


class DuckDBDialect(Dialect):
    name = "duckdb"
    capabilities = Capabilities(
        max_identifier_length=255,
        transactional_ddl=True,
        max_decimal_precision=38,  # https://duckdb.org/docs/stable/sql/data_types/numeric
        max_fractional_digits=9,  # TIMESTAMP_NS; TIME keeps microseconds (see loss())
        file_database=True,
        # An ART index must fit in memory while it is built (DuckDB's documented limit): on the
        # watermark of 10M rows it failed under the cache's pool, and zonemaps already serve the
        # watermark's ranges (docs/databases.md).
        watermark_index=False,
        zonemaps=True,  # https://duckdb.org/docs/stable/sql/indexes
    )

    def engine_options(self, url: sa.URL, *, role: str, timeouts: Timeouts) -> dict[str, Any]:
        # A file: no connection to time out or keep alive.
        if role == "cache" and url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return {}

    def prepare_engine(self, engine: sa.Engine, *, role: str) -> None:
        if role == "cache" and (path := _file_of(engine.url)) is not None:
            _cache_files.add(path)
        if "memory_limit" not in engine.url.query:  # `duckdb:///f.duckdb?memory_limit=2GB` wins
            # SET, not a connect-time config: a second configuration of a database file this
            # process already has open is refused ("different configuration than existing").
            @sa.event.listens_for(engine, "connect")
            def _bound_the_buffer_pool(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute(f"SET memory_limit = '{memory_limit()}'")
                finally:
                    cursor.close()

        @sa.event.listens_for(engine, "do_connect")
        def _wait_for_file_lock(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            pause = 0.05
            while True:
                try:
                    return dialect.connect(*cargs, **cparams)
                except duckdb.IOException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, 1.0)

    def source_type(self, type_: sa.types.TypeEngine[Any], *, table: str, column: str) -> ColumnType:
        if isinstance(type_, sa.types.NullType):
            raise UnsupportedType(table, column, "a nested or interval DuckDB type")
        return from_sqlalchemy(type_, table=table, column=column)

    def column_type(self, ct: ColumnType) -> sa.types.TypeEngine[Any]:
        match ct.kind:
            case Kind.DATETIME if (ct.precision or 0) > 6 and not ct.timezone:
                return TIMESTAMP_NS()
            case Kind.DATETIME:
                return postgresql.TIMESTAMP(timezone=ct.timezone)
            case Kind.DECIMAL if ct.precision is None or ct.precision > 38:
                return sa.Numeric(38, min(ct.scale if ct.scale is not None else 10, 38))
            case Kind.STRING:
                return sa.String()  # VARCHAR: DuckDB ignores lengths
            case Kind.BINARY:
                return sa.LargeBinary()
            case Kind.FLOAT:
                return sa.Double()
        return super().column_type(ct)

    def fractional_digits(self, ct: ColumnType) -> int:
        # TIMESTAMP_NS exists only without a time zone; TIME and TIMESTAMPTZ keep microseconds.
        if ct.kind is Kind.TIME or (ct.kind is Kind.DATETIME and ct.timezone):
            return 6
        return super().fractional_digits(ct)

    def type_family(self, type_: sa.types.TypeEngine[Any]) -> str:
        return "datetime" if isinstance(type_, TIMESTAMP_NS) else super().type_family(type_)

    def is_transient(self, error: BaseException) -> bool:
        """DuckDB has no error codes; its exception classes are the codes.

        A write-write conflict between transactions and a file held by another process clear
        up by themselves (https://duckdb.org/docs/stable/connect/concurrency).
        """
        orig = driver_error(error)
        if isinstance(orig, duckdb.TransactionException | duckdb.IOException):
            return True
        return super().is_transient(error)

    def is_duplicate_key(self, conn: sa.Connection, error: BaseException) -> bool:
        return isinstance(driver_error(error), duckdb.ConstraintException)

    def bulk_load(self, conn: sa.Connection, staging: sa.Table, frame: pl.DataFrame) -> None:
        """INSERT ... SELECT from the batch registered as an Arrow view: no rows through Python."""
        if frame.is_empty():
            return
        raw = conn.connection.driver_connection
        quote = conn.dialect.identifier_preparer.quote
        raw.register(_BATCH_VIEW, frame.to_arrow())  # type: ignore[union-attr]
        columns = ", ".join(quote(name) for name in frame.columns)
        try:
            raw.execute(  # type: ignore[union-attr]
                f"INSERT INTO {quote(staging.name)} ({columns}) SELECT {columns} FROM {_BATCH_VIEW}"
            )
        except duckdb.Error:
            # A failed INSERT (a duplicate key of a reload) aborts the transaction, and every
            # further call, unregistering included, would then hide the error with its own.
            with contextlib.suppress(duckdb.Error):
                raw.unregister(_BATCH_VIEW)  # type: ignore[union-attr]
            raise
        raw.unregister(_BATCH_VIEW)  # type: ignore[union-attr]

    def fresh_table(self, conn: sa.Connection, target: sa.Table, *, several_batches: bool) -> sa.Table | None:
        """`<table>__sync_new`, committed, for a full load to fill a row group per transaction
        (`load_separately`): one transaction appending a whole reload kept every row in memory
        until the commit (figures: docs/performance.md, "Measured choices")."""
        return self.create_committed(conn, self.fresh_copy(target))

    def load_separately(self, conn: sa.Connection, dest: sa.Table, frames: Iterator[pl.DataFrame]) -> None:
        """The batches committed a row group at a time (the sync's connection, outside the commit's
        transaction), and a checkpoint whenever the key's index holds a quarter of the pool.

        A commit of a whole row group is written straight to the file; a smaller one went through
        the WAL and was written again by the checkpoint that followed, and one transaction for the
        whole load held every row until the commit (docs/performance.md). No automatic checkpoint
        follows a commit that skips the WAL, so the index kept every key of the load in memory
        until the pool ran out; a checkpoint writes it out, and its blocks can be evicted.
        """
        raw = conn.connection.driver_connection
        threshold = _pool_bytes(raw) // 4
        transaction: sa.RootTransaction | None = None
        try:
            for frame, ends_commit in _cut_at(frames, ROW_GROUP_ROWS):
                transaction = transaction or conn.begin()
                self.bulk_load(conn, dest, frame)
                if ends_commit:
                    transaction.commit()
                    transaction = None
                    if _index_bytes(raw) > threshold:
                        raw.execute("CHECKPOINT")  # type: ignore[union-attr]
            if transaction is not None:
                transaction.commit()
        except BaseException:
            if transaction is not None and transaction.is_active:
                transaction.rollback()
            raise

    def swap_in(self, conn: sa.Connection, target: sa.Table, fresh: sa.Table) -> None:
        """Drop the target, rename the fresh table (its key checked during the load) and build the
        indexes, in the commit's transaction. A target with indexes or foreign keys of its own keeps
        its identity: its rows are replaced from the fresh table instead."""
        if not self._swappable(conn, target):
            super().swap_in(conn, target, fresh)
            return
        conn.execute(sa.schema.DropTable(target))
        preparer = conn.dialect.identifier_preparer
        conn.exec_driver_sql(
            f"ALTER TABLE {preparer.format_table(fresh)} RENAME TO {preparer.quote(target.name)}"
        )
        for index in target.indexes:
            index.create(conn)

    def _swappable(self, conn: sa.Connection, target: sa.Table) -> bool:
        schema = target.schema or conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        indexes = conn.execute(_INDEXES, {"schema": schema, "table": target.name}).scalars().all()
        references = conn.execute(_REFERENCES, {"schema": schema, "table": target.name}).scalar_one()
        ours = {index.name for index in target.indexes} | _earlier_watermark_index(target)
        return set(indexes) <= ours and references == 0

    def arrow_batches(
        self,
        source: sa.Connection,
        statement: sa.Select[Any],
        *,
        schema: dict[str, pl.DataType],
        table: str,
        batch_size: int,
    ) -> Iterator[pl.DataFrame]:
        """DuckDB's own record-batch reader: columnar to Arrow, no Python objects per value; a
        table's plain scan under a smaller buffer pool (`_scan_memory`)."""
        # IN lists (the keys of a hash incremental) as one parameter per value.
        compiled = statement.compile(dialect=source.dialect, compile_kwargs={"render_postcompile": True})
        positions = compiled.positiontup or []
        params = [compiled.params[name] for name in positions]
        read = functools.partial(
            _record_batches,
            source,
            compiled.string,
            params,
            schema=schema,
            table=table,
            batch_size=batch_size,
        )
        started = capped = False
        try:
            with _scan_memory(source, statement) as capped:
                for frame in read():
                    started = True
                    yield frame
            return
        except (duckdb.OutOfMemoryException, OSError) as err:
            if started or not capped or not _out_of_memory(err):
                raise
        # The smaller pool was too small for this scan (many threads, wide rows), found before
        # its first batch: the scan again, under the connection's pool.
        yield from read()

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)


DIALECT = DuckDBDialect()
