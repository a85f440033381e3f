"""SQLite as source and cache: WAL, BEGIN IMMEDIATE for the swap, prepared executemany loads,
and full loads of several batches through ADBC's ingest in a process of its own (`sqlite_ingest`).

This process never writes the cache through ADBC's SQLite driver: it links its own copy of SQLite,
and two copies in one process release each other's POSIX locks when either closes the file (a
second connection's close turned the next sync_log write into "disk I/O error";
https://www.sqlite.org/howtocorrupt.html#multiple_copies_of_sqlite_linked_into_the_same_application).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from sync_assets.dialects import sqlite_ingest, sqlite_reader
from sync_assets.dialects.base import Capabilities, Dialect, Timeouts, driver_error
from sync_assets.dialects.row_hash import SQLITE_FUNCTION, sqlite_row_hash
from sync_assets.types import ColumnType, Kind, from_sqlalchemy

# SQLite keeps 15 significant digits when it stores a NUMERIC value as REAL
# (https://www.sqlite.org/datatype3.html#type_affinity); wider decimals are stored as exact text.
EXACT_NUMERIC_DIGITS = 15
# Waiting for another writer of the cache file beats failing with "database is locked".
BUSY_TIMEOUT_SECONDS = 300
_IMMEDIATE = "sync_assets_begin_immediate"
_ATTACHED = "sync_assets_source_attached"
# https://www.sqlite.org/rescode.html: SQLITE_BUSY and SQLITE_LOCKED (primary codes) clear up by themselves.
SQLITE_BUSY = 5
TRANSIENT_CODES = frozenset({SQLITE_BUSY, 6})

# Views and triggers name tables in their SQL text; any mention keeps a table from being swapped.
_MENTIONS = sa.text("SELECT count(*) FROM sqlite_master WHERE type IN ('view', 'trigger') AND sql LIKE :name")

# SQLAlchemy's storage formats, so apps reading the cache through SQLAlchemy get typed values back.
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S.%6f"
TIME_FORMAT = "%H:%M:%S.%6f"


class SQLiteDialect(Dialect):
    name = "sqlite"
    capabilities = Capabilities(
        max_identifier_length=128,
        transactional_ddl=True,
        same_engine_copy=True,
        file_database=True,
        independent_reader=True,
    )

    def engine_options(self, url: sa.URL, *, role: str, timeouts: Timeouts) -> dict[str, Any]:
        # A file: no connection to time out or keep alive.
        if role == "cache" and url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return {"connect_args": {"timeout": BUSY_TIMEOUT_SECONDS}}

    def prepare_engine(self, engine: sa.Engine, *, role: str) -> None:
        # pysqlite's own transaction handling skips BEGIN before DDL; take it over
        # (https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl).
        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            # A copy between two SQLite files runs the source's SELECT on the cache's connection.
            dbapi_connection.create_function(SQLITE_FUNCTION, -1, sqlite_row_hash, deterministic=True)
            if role == "cache":
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
                dbapi_connection.execute("PRAGMA synchronous=NORMAL")
                # No checkpoint inside a sync's commit: copying a whole reload from the WAL into
                # the database file doubled the commit; after_commit() checkpoints instead.
                dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")
                # Debian's SQLite zeroes every page a reload frees; FAST zeroes only deleted rows in
                # pages it writes anyway (figures: docs/performance.md, "Measured choices").
                dbapi_connection.execute("PRAGMA secure_delete=FAST")
                # Index builds after a reload sort with a helper thread (docs/performance.md).
                dbapi_connection.execute("PRAGMA threads=2")

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get(_IMMEDIATE) else "BEGIN")

    def source_type(self, type_: sa.types.TypeEngine[Any], *, table: str, column: str) -> ColumnType:
        ct = from_sqlalchemy(type_, table=table, column=column)
        if ct.kind is Kind.INTEGER:
            return ColumnType(Kind.INTEGER, bits=64)  # every SQLite integer is 64-bit
        return ct

    def column_type(self, ct: ColumnType) -> sa.types.TypeEngine[Any]:
        if ct.kind is Kind.DECIMAL and (ct.precision is None or ct.precision > EXACT_NUMERIC_DIGITS):
            return sa.Text()
        if ct.kind is Kind.UUID:
            return sa.String(36)  # SQLAlchemy's Uuid would store 32 hex digits without dashes
        if ct.kind is Kind.INTEGER:
            # Every SQLite integer is 64-bit. Declared INTEGER, a one-column key would become the
            # rowid, and SQLite would then invent a key for a NULL instead of refusing the row.
            return sa.BigInteger()
        return super().column_type(ct)

    @contextmanager
    def write_transaction(self, conn: sa.Connection) -> Iterator[None]:
        # A deferred transaction that read first fails at once with SQLITE_BUSY when another
        # writer committed meanwhile; IMMEDIATE takes the write lock up front and waits for it.
        # With the source attached, IMMEDIATE would also lock the source file, and the commit would
        # then wait for every reader of the source; a deferred BEGIN whose first statement writes
        # takes only the cache's write lock.
        conn.info[_IMMEDIATE] = not conn.info.get(_ATTACHED)
        try:
            with conn.begin():
                conn.info.pop(_IMMEDIATE, None)
                yield
        finally:
            conn.info.pop(_IMMEDIATE, None)

    def is_transient(self, error: BaseException) -> bool:
        code = getattr(driver_error(error), "sqlite_errorcode", None)
        if code is not None and code & 0xFF in TRANSIENT_CODES:
            return True
        return super().is_transient(error)

    def bulk_load(self, conn: sa.Connection, staging: sa.Table, frame: pl.DataFrame) -> None:
        if frame.is_empty():
            return
        statement = str(sa.insert(staging).compile(dialect=conn.dialect))
        rows = to_sqlite_values(frame).iter_rows()
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(statement, rows)
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
        """ADBC's SQLite reader (`sqlite_reader`) for a table of a database file; None (rows) for
        an in-memory or attached database, URL options, a row hash (our own SQL function), or a
        decimal wider than SQLite keeps exactly (the row path formats its floats)."""
        url = source.engine.url
        if not url.database or url.database == ":memory:" or url.query:
            return None
        if any(
            isinstance(dtype, pl.Decimal) and (dtype.precision or 0) > EXACT_NUMERIC_DIGITS
            for dtype in schema.values()
        ):
            return None
        if any(isinstance(f, sa.Table) and f.schema is not None for f in statement.get_final_froms()):
            return None
        query = str(
            sqlite_reader.stream_query(statement, schema).compile(
                dialect=source.dialect, compile_kwargs={"literal_binds": True}
            )
        )
        if SQLITE_FUNCTION in query:
            return None
        # ADBC links a SQLite of its own, and either copy closing the file drops the other's POSIX
        # locks (see the module docstring): this connection holds none while ADBC reads.
        if source.in_transaction():
            source.rollback()
        path = str(Path(url.database).expanduser())
        return sqlite_reader.batches(path, query, schema=schema, table=table, batch_size=batch_size)

    def can_copy(
        self, source: sa.Connection, cache: sa.Connection, target: sa.Table, source_kinds: dict[str, Any]
    ) -> bool:
        """Two different database files, and no column whose stored form the general path rewrites
        (decimals wider than 15 digits become exact text there)."""
        if not super().can_copy(source, cache, target, source_kinds):
            return False
        source_file, cache_file = source.engine.url.database, cache.engine.url.database
        if not source_file or source_file == ":memory:" or not cache_file:
            return False
        if Path(source_file).resolve() == Path(cache_file).resolve():
            return False
        return not any(
            kind is Kind.DECIMAL and isinstance(target.c[name].type, sa.Text)
            for name, kind in source_kinds.items()
        )

    def cast_for_copy(self) -> bool:
        # CAST(text AS DATETIME) would apply NUMERIC affinity and ruin the value: copy values as stored.
        return False

    @contextmanager
    def copy_session(self, source: sa.Connection, cache: sa.Connection) -> Iterator[None]:
        """ATTACH the source file to the cache connection (not allowed inside a transaction)."""
        raw = cache.connection.driver_connection
        raw.execute("ATTACH DATABASE ? AS sync_source", (str(source.engine.url.database),))  # type: ignore[union-attr]
        cache.info[_ATTACHED] = True
        try:
            yield
        finally:
            cache.info.pop(_ATTACHED, None)
            raw.execute("DETACH DATABASE sync_source")  # type: ignore[union-attr]

    def copy_rows(
        self,
        source: sa.Connection,
        statement: sa.Select[Any],
        cache: sa.Connection,
        dest: sa.Table,
        *,
        log: Any,
    ) -> int:
        """INSERT ... SELECT inside SQLite, from the attached source file: no row leaves the engine.

        A whole table copied as it is (no bounds, no renames, every column in the source's order)
        is written `INSERT INTO t SELECT * FROM s`, the one form SQLite's transfer optimization
        accepts: where both tables' columns have the same affinities and the destination's key
        has a twin index on the source, it copies the stored records and index entries without
        decoding them (docs/performance.md, "Measured choices"). Elsewhere SQLite runs the same statement
        row by row, with the same result, as positions and names match.
        """
        schema = "temp" if dest.info.get("temporary") else "main"
        into = dest.to_metadata(sa.MetaData(), schema=schema)
        source_table = _whole_table(statement, dest)
        if source_table is not None:
            quote = cache.dialect.identifier_preparer.quote
            into_name, from_name = quote(dest.name), quote(source_table.name)
            insert: Any = sa.text(f"INSERT INTO {schema}.{into_name} SELECT * FROM sync_source.{from_name}")
        else:
            insert = sa.insert(into).from_select([c.name for c in dest.columns], statement)
        # Unqualified source tables would resolve to same-named cache tables first: qualify them.
        result = cache.execute(insert, execution_options={"schema_translate_map": {None: "sync_source"}})
        log(f"{dest.name}: {result.rowcount:,} rows copied inside SQLite")
        return result.rowcount

    def reload(self, conn: sa.Connection, target: sa.Table, fill: Callable[[sa.Table], int]) -> int:
        """Fill a fresh table in the transaction, then `swap_in` it."""
        if not self._swappable(conn, target):
            return super().reload(conn, target, fill)
        fresh = self.fresh_copy(target)
        conn.execute(sa.schema.DropTable(fresh, if_exists=True))
        fresh.create(conn)
        rows = fill(fresh)
        self.swap_in(conn, target, fresh)
        return rows

    def fresh_table(self, conn: sa.Connection, target: sa.Table, *, several_batches: bool) -> sa.Table | None:
        """A committed fresh table for ADBC's ingest in a process of its own (`sqlite_ingest`),
        for a load of several batches into a database file: the process's start (0.4 s) costs
        more than sqlite3 loading one batch inside the commit, as smaller loads still do."""
        if not several_batches or not sqlite_ingest.available() or _database_file(conn) is None:
            return None
        return self.create_committed(conn, self.fresh_copy(target))

    def load_separately(self, conn: sa.Connection, dest: sa.Table, frames: Iterator[pl.DataFrame]) -> None:
        database = _database_file(conn)
        assert database is not None, "fresh_table() takes database files only"
        try:
            sqlite_ingest.copy(database, dest.name, (to_sqlite_values(frame) for frame in frames))
        except sqlite_ingest.IngestError as err:
            # A refused key reads as the driver's own IntegrityError, as from executemany.
            error_class = sqlite3.IntegrityError if err.constraint else sqlite3.OperationalError
            msg = f"{dest.name}: {err}"
            error = error_class(msg)
            if err.busy:  # another writer held the file past the busy timeout: retried (is_transient)
                error.sqlite_errorcode = SQLITE_BUSY  # type: ignore[attr-defined]
            raise error from None

    def swap_in(self, conn: sa.Connection, target: sa.Table, fresh: sa.Table) -> None:
        """Index the filled fresh table once, then swap it in by renaming, in the caller's transaction.

        Deleting a million rows and maintaining the watermark index row by row cost several times
        the copy itself. Readers (WAL) see the old table until the commit. The old table is only
        renamed here and dropped after the commit (`after_commit`), so readers get the new rows
        without waiting for its pages to be freed; a leftover from a crash is dropped next time.
        A table that views, triggers or extra indexes refer to keeps its identity: its rows are
        replaced by DELETE + INSERT ... SELECT from the fresh table.
        """
        if not self._swappable(conn, target):
            super().swap_in(conn, target, fresh)
            return
        conn.execute(sa.schema.DropTable(_retired(target), if_exists=True))
        # Index names are global in SQLite: the old table's go first, so the fresh ones can take them.
        for index in target.indexes:
            conn.execute(sa.schema.DropIndex(index, if_exists=True))
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(f"ALTER TABLE {quote(target.name)} RENAME TO {quote(_retired(target).name)}")
        for index in target.indexes:
            sa.Index(index.name, *[fresh.c[c.name] for c in index.columns], unique=bool(index.unique)).create(
                conn
            )
        conn.exec_driver_sql(f"ALTER TABLE {quote(fresh.name)} RENAME TO {quote(target.name)}")

    def after_commit(self, conn: sa.Connection, target: sa.Table) -> None:
        """Drop the swapped-out table, then copy the WAL into the database file (PASSIVE: readers
        are not blocked, and the rows were already durable in the WAL at the commit)."""
        with conn.begin():
            conn.execute(sa.schema.DropTable(_retired(target), if_exists=True))
        conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]

    def _swappable(self, conn: sa.Connection, target: sa.Table) -> bool:
        """Only a table that is nothing but rows, its key and the indexes sync_assets made."""
        mentions = conn.execute(_MENTIONS, {"name": f"%{target.name}%"}).scalar_one()
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes(target.name)}
        return mentions == 0 and indexes == {index.name for index in target.indexes}

    def insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table)


def _whole_table(statement: sa.Select[Any], dest: sa.Table) -> sa.Table | None:
    """The source table when `statement` reads all of it, unfiltered, column for column as `dest`."""
    froms = statement.get_final_froms()
    if statement.whereclause is not None or len(froms) != 1 or not isinstance(froms[0], sa.Table):
        return None
    table = froms[0]
    if table.schema is not None:  # the attached file is addressed as sync_source
        return None
    selected = [getattr(c, "element", c) for c in statement.selected_columns]
    names = [c.name for c in statement.selected_columns]
    same_columns = len(selected) == len(table.columns) and all(
        s is t for s, t in zip(selected, table.columns, strict=False)
    )
    unrenamed = names == [c.name for c in table.columns] == [c.name for c in dest.columns]
    return table if same_columns and unrenamed else None


def _database_file(conn: sa.Connection) -> str | None:
    """The cache's database file, if it is a plain one (no URI options, not in memory)."""
    url = conn.engine.url
    if not url.database or url.database == ":memory:" or url.query:
        return None
    return str(Path(url.database).expanduser())


def _retired(target: sa.Table) -> sa.Table:
    """The name a swapped-out table keeps until it is dropped after the commit."""
    return sa.Table(f"{target.name}__sync_old", sa.MetaData())


def to_sqlite_values(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast a batch, vectorised, to values sqlite3 binds natively, in SQLAlchemy's text formats."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            fmt = DATETIME_FORMAT + ("%:z" if dtype.time_zone else "")
            exprs.append(col.dt.strftime(fmt))
        elif dtype == pl.Date:
            exprs.append(col.dt.strftime("%Y-%m-%d"))
        elif dtype == pl.Time:
            exprs.append(col.dt.strftime(TIME_FORMAT))
        elif isinstance(dtype, pl.Decimal):
            exprs.append(col.cast(pl.String))
        elif dtype == pl.Boolean:
            exprs.append(col.cast(pl.Int8))
        else:
            exprs.append(col)
    return frame.select(exprs)


DIALECT = SQLiteDialect()
