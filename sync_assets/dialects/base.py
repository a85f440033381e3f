"""The interfaces database modules implement, by role, and the registry that picks one.

Shared code asks a dialect for everything that differs between databases and never looks at
`engine.dialect.name` itself: a `SourceDialect` for reading (reflection, source types, Arrow
reads), a `CacheDialect` for holding the cache (DDL types, staging, bulk load, swap, upsert).
Source-only databases (Oracle, Sybase) are `SourceDialect`s alone, so they have no cache method
to inherit and fail, and the catalog refuses them as the cache.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import sqlalchemy as sa

from sync_assets.dialects.deadline import LoginTimeout
from sync_assets.dialects.upsert import Pairs, UpsertCounts, staged_changes
from sync_assets.types import ColumnType, Kind, from_sqlalchemy, needs_text_transport

# The table a full load fills before it replaces the target (`CacheDialect.fresh_copy`).
FRESH_SUFFIX = "__sync_new"


@dataclass(frozen=True)
class Capabilities:
    """Facts about a database that shape the SQL we send it and the types it can hold exactly."""

    max_identifier_length: int
    transactional_ddl: bool  # CREATE/DROP roll back with the transaction
    same_engine_copy: bool = False  # copy_rows() can move rows from a source of the same kind
    max_parameters: int | None = None  # bound parameters per statement (SQL Server: 2,100)
    max_decimal_precision: int | None = None  # widest exact DECIMAL; None = unbounded numeric
    max_fractional_digits: int = 6  # sub-second digits a timestamp/time column keeps
    time_zones: bool = True  # a timestamp column can keep the instant of a zoned value
    file_database: bool = False  # the database is a file, which connecting creates when it is missing
    # arrow_batches() reads on a connection of its own, in C: it can run ahead on a thread
    independent_reader: bool = False
    # the cache table gets an index on its watermark column (see target_table)
    watermark_index: bool = True
    # every column keeps min-max zonemaps: a range on any column skips blocks without an index
    zonemaps: bool = False


@dataclass(frozen=True)
class Timeouts:
    """A catalog connection's `connect_timeout` and `keepalive`, in seconds, for the driver's options."""

    connect: float  # opening a connection (TCP and login) gives up after this
    keepalive: float  # an idle connection is probed after this, so a dead peer is noticed


# What talking to a database can raise besides SyncError: SQLAlchemy's errors (drivers' included),
# and the login deadline of dialects whose driver leaves part of the login unbounded.
DATABASE_ERRORS: tuple[type[Exception], ...] = (sa.exc.SQLAlchemyError, LoginTimeout)


class Database:
    """What every database module says, whichever side it is on: engine options, and which of its
    errors are worth a retry. Behaviour in SQLAlchemy Core; modules override what differs."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def engine_options(self, url: sa.URL, *, role: str, timeouts: Timeouts) -> dict[str, Any]:
        """Extra create_engine() arguments; `role` is "source" or "cache".

        Every module maps `timeouts` to what its driver offers, so no connection hangs on a
        server that accepts and never answers (file databases have nothing to map).
        """
        return {}

    def prepare_engine(self, engine: sa.Engine, *, role: str) -> None:
        """Hook for connection events (pragmas, session settings)."""

    def missing_database(self, url: sa.URL) -> str | None:
        """Why the database at `url` is not there, found without connecting (connecting would
        create a missing file database); for commands that only look."""
        if not self.capabilities.file_database or url.database in (None, "", ":memory:"):
            return None
        path = Path(url.database).expanduser()
        return None if path.exists() else f"{path} does not exist"

    def is_transient(self, error: BaseException) -> bool:
        """Worth a retry: the connection dropped, or the database asked us to try again.

        Modules classify their driver's errors by SQLSTATE or vendor code, never by message text,
        and a permanent error (`is_permanent`) is never transient.
        """
        if isinstance(error, LoginTimeout):
            return True
        return (
            isinstance(error, sa.exc.DBAPIError)
            and error.connection_invalidated
            and not self.is_permanent(error)
        )

    def is_permanent(self, error: BaseException) -> bool:
        """Refused for good: a wrong password, a locked or expired account, a missing privilege or
        database. Never retried, whatever else the error says (a server closes the connection
        after refusing a login, and repeated bad logins lock service accounts)."""
        return False


class SourceDialect(Database):
    """A database read as a source: reflection, the types it delivers, its Arrow reader."""

    def reflect_table(self, conn: sa.Connection, name: str, *, schema: str | None) -> sa.Table:
        """The source table the catalog names; modules add what SQLAlchemy's reflection misses."""
        return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)

    def source_column_name(self, reflected: str) -> str:
        """The name catalogs use for a reflected column (and the cache keeps, unless renamed)."""
        return str(reflected)

    def source_expression(self, column: sa.ColumnElement[Any], ct: ColumnType) -> sa.ColumnElement[Any]:
        """What the source SELECT reads for `column`: exact text where the driver would not be exact."""
        if needs_text_transport(column.type, ct):
            return self.text_expression(column)
        return column

    def text_expression(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """`column` as exact text. A `Cast` (or subclass), so comparisons can unwrap the raw column."""
        return sa.cast(column, sa.Text)

    def source_type(self, type_: sa.types.TypeEngine[Any], *, table: str, column: str) -> ColumnType:
        """What a reflected source column holds."""
        return from_sqlalchemy(type_, table=table, column=column)

    def arrow_batches(
        self,
        source: sa.Connection,
        statement: sa.Select[Any],
        *,
        schema: dict[str, pl.DataType],
        table: str,
        batch_size: int,
    ) -> Iterator[pl.DataFrame] | None:
        """Batches from the driver's own Arrow reader, cast to `schema`; None where there is none."""
        return None


class CacheDialect(Database):
    """A database that holds the cache: DDL types, staging, bulk loads, copies, swaps and upserts."""

    def column_type(self, ct: ColumnType) -> sa.types.TypeEngine[Any]:
        """The DDL type of a cache column that holds `ct` without loss."""
        match ct.kind:
            case Kind.INTEGER:
                return {16: sa.SmallInteger(), 32: sa.Integer()}.get(ct.bits or 64, sa.BigInteger())
            case Kind.DECIMAL:
                return sa.Numeric(ct.precision, ct.scale) if ct.precision else sa.Numeric()
            case Kind.FLOAT:
                return sa.Double()
            case Kind.STRING:
                return sa.Unicode(ct.length) if ct.length else sa.UnicodeText()
            case Kind.BOOLEAN:
                return sa.Boolean()
            case Kind.DATE:
                return sa.Date()
            case Kind.DATETIME:
                return sa.DateTime(timezone=ct.timezone)
            case Kind.TIME:
                return sa.Time()
            case Kind.BINARY:
                return sa.LargeBinary()
            case Kind.UUID:
                return sa.Uuid(as_uuid=False)

    def loss(self, ct: ColumnType) -> str | None:
        """What `column_type(ct)` cannot hold of `ct`, in words; None when the mapping is lossless.

        Driven by `capabilities`, so a dialect states its limits once and the contract follows.
        """
        caps = self.capabilities
        digits = caps.max_decimal_precision
        if ct.kind is Kind.DECIMAL and digits is not None and (ct.precision or digits + 1) > digits:
            return f"{ct.describe()} needs more than the {digits} digits a {self.name} DECIMAL keeps"
        if ct.kind in (Kind.DATETIME, Kind.TIME) and (ct.precision or 0) > self.fractional_digits(ct):
            return (
                f"{ct.precision} fractional second digits, the {self.name} cache keeps "
                f"{self.fractional_digits(ct)}"
            )
        if ct.kind is Kind.DATETIME and ct.timezone and not caps.time_zones:
            return f"time zone, the {self.name} cache has no zoned timestamp"
        return None

    def key_column_type(self, ct: ColumnType) -> sa.types.TypeEngine[Any]:
        """The DDL type of a column the cache indexes (primary key, watermark)."""
        return self.column_type(ct)

    def fractional_digits(self, ct: ColumnType) -> int:
        """Sub-second digits the cache column made for `ct` keeps."""
        return self.capabilities.max_fractional_digits

    def type_family(self, type_: sa.types.TypeEngine[Any]) -> str:
        """A coarse family used to tell whether an existing cache column still fits."""
        return _family(type_)

    @contextmanager
    def write_transaction(self, conn: sa.Connection) -> Iterator[None]:
        """The transaction that swaps or merges staged rows into the target."""
        with conn.begin():
            yield

    def is_duplicate_key(self, conn: sa.Connection, error: BaseException) -> bool:
        """A unique or primary key violation (the source held the same key twice), whether it
        came through SQLAlchemy or straight from the driver (COPY, executemany on a raw cursor)."""
        integrity = getattr(conn.dialect.loaded_dbapi, "IntegrityError", None)
        return isinstance(error, sa.exc.IntegrityError) or (
            integrity is not None and isinstance(driver_error(error), integrity)
        )

    def serialize_starts(self, conn: sa.Connection) -> None:
        """Make concurrent sync starts take turns (counting a source's running syncs is racy otherwise).

        SQLite's write transaction (BEGIN IMMEDIATE) already does.
        """

    def staging_table(self, target: sa.Table, *, suffix: str) -> sa.Table:
        """A session temp table shaped like the target, without constraints."""
        name = f"_sync_stage_{target.name}"[: self.capabilities.max_identifier_length - len(suffix)] + suffix
        columns = [sa.Column(c.name, c.type, nullable=True) for c in target.columns]
        return sa.Table(name, sa.MetaData(), *columns, prefixes=["TEMPORARY"], info={"temporary": True})

    def bulk_load(self, conn: sa.Connection, staging: sa.Table, frame: pl.DataFrame) -> None:
        """Append one batch to the staging table, inside the caller's transaction."""
        raise NotImplementedError

    def copy_rows(
        self,
        source: sa.Connection,
        statement: sa.Select[Any],
        cache: sa.Connection,
        dest: sa.Table,
        *,
        log: Any,
    ) -> int:
        """Copy the rows of `statement` from a source of the same kind into `dest`; returns the count.

        Only called when `can_copy` agreed; runs in the caller's transaction.
        """
        raise NotImplementedError

    def reload(self, conn: sa.Connection, target: sa.Table, fill: Callable[[sa.Table], int]) -> int:
        """Replace all rows of `target` with what `fill` writes, inside the caller's transaction.

        Readers keep seeing the old rows until the transaction commits.
        """
        conn.execute(sa.delete(target))
        return fill(target)

    def fresh_copy(self, target: sa.Table, *, keyed: bool = True) -> sa.Table:
        """`<table>__sync_new` in the target's schema, shaped like it: with its key, or (not
        `keyed`) a heap of nullable columns; no index either way."""
        name = target.name[: self.capabilities.max_identifier_length - len(FRESH_SUFFIX)] + FRESH_SUFFIX
        columns = [
            sa.Column(
                c.name,
                c.type,
                primary_key=keyed and c.primary_key,
                nullable=c.nullable if keyed else True,
                autoincrement=False,
            )
            for c in target.columns
        ]
        return sa.Table(name, sa.MetaData(), *columns, schema=target.schema)

    def create_committed(self, conn: sa.Connection, table: sa.Table) -> sa.Table:
        """Create `table` in a transaction of its own, after dropping one a crash left behind."""
        with conn.begin():
            conn.execute(sa.schema.DropTable(table, if_exists=True))
            table.create(conn)
        return table

    def fresh_table(self, conn: sa.Connection, target: sa.Table, *, several_batches: bool) -> sa.Table | None:
        """A committed, empty table shaped like `target`, for a full load to fill before the commit
        through `load_separately` (one a crash left is dropped first); None where the cache loads
        inside the commit's transaction (`reload`). `several_batches`: the load is more than its
        first batch, for a loader whose start costs more than a small table's load."""
        return None

    def separate_staging(
        self, conn: sa.Connection, target: sa.Table, *, several_batches: bool
    ) -> sa.Table | None:
        """For an incremental: a committed, empty heap shaped like `target` (`<table>__sync_new`,
        one a crash left dropped first) for `load_separately` to fill before the commit merges it;
        None where staging is a session temp table loaded in its transaction (`staging_table`)."""
        return None

    def load_separately(self, conn: sa.Connection, dest: sa.Table, frames: Iterator[pl.DataFrame]) -> None:
        """Load every batch of `frames` into `dest` (a `fresh_table` or a `separate_staging`) on
        a connection of the loader's own, which commits them; returns once all are written."""
        raise NotImplementedError

    def swap_in(self, conn: sa.Connection, target: sa.Table, fresh: sa.Table) -> None:
        """Inside the commit's transaction: the rows of the filled `fresh_table` become `target`'s.

        Here the target keeps its identity (grants, triggers, views): its rows are replaced from
        `fresh`, which is dropped; modules that can swap the table itself override this."""
        for statement in self.replace_from(target, fresh):
            conn.execute(statement)

    def replace_from(self, target: sa.Table, fresh: sa.Table) -> list[sa.Executable]:
        """`swap_in`'s statements: DELETE, INSERT ... SELECT from `fresh`, DROP `fresh`."""
        names = [c.name for c in target.columns]
        return [
            sa.delete(target),
            sa.insert(target).from_select(names, sa.select(*[fresh.c[n] for n in names])),
            sa.schema.DropTable(fresh),
        ]

    def after_commit(self, conn: sa.Connection, target: sa.Table) -> None:
        """Clean-up readers need not wait for (e.g. dropping the table a swap replaced), run after
        the commit outside any transaction."""

    def can_copy(
        self, source: sa.Connection, cache: sa.Connection, target: sa.Table, source_kinds: dict[str, Any]
    ) -> bool:
        """Whether copy_rows() can move these rows from `source` into `cache` without changing a value."""
        return self.capabilities.same_engine_copy and source.dialect.name == self.name

    def cast_for_copy(self) -> bool:
        """Whether the copy's SELECT casts each column to its cache type (binary formats must agree)."""
        return True

    @contextmanager
    def copy_session(self, source: sa.Connection, cache: sa.Connection) -> Iterator[None]:
        """Set-up around copy_rows() that must happen outside any transaction (e.g. ATTACH)."""
        yield

    def upsert(
        self,
        conn: sa.Connection,
        target: sa.Table,
        staging: sa.Table,
        *,
        key: Sequence[str],
        updated_at: str | None,
    ) -> UpsertCounts:
        """Merge the latest staged version of each key, writing only new keys and changed rows.

        Unchanged rows are left out of the INSERT's SELECT, not only out of its UPDATE: on
        PostgreSQL, ON CONFLICT DO UPDATE locks (and so writes) every row it meets, even one its
        WHERE then skips. The WHERE stays, so a row is never rewritten with the values it holds.
        """
        latest = latest_per_key(staging, key=key, updated_at=updated_at)
        changes = staged_changes(latest, target, key=key, values_differ=self.values_differ)
        counts = changes.count(conn)
        names = [c.name for c in target.columns]
        # The SELECT's WHERE also keeps SQLite from parsing ON CONFLICT as a join constraint
        # (https://www.sqlite.org/lang_upsert.html, "Parsing Ambiguity").
        insert = self.insert(target).from_select(names, changes.rows_to_write(names))
        non_key = [n for n in names if n not in key]
        if non_key:
            statement = insert.on_conflict_do_update(
                index_elements=list(key),
                set_={n: insert.excluded[n] for n in non_key},
                where=self.values_differ((target.c[n], insert.excluded[n]) for n in non_key),
            )
        else:
            statement = insert.on_conflict_do_nothing(index_elements=list(key))
        conn.execute(statement)
        return counts

    def values_differ(self, pairs: Pairs) -> sa.ColumnElement[bool]:
        """True where any pair of values differs as the cache stores them; NULL against a value
        differs, NULL against NULL does not (SQLAlchemy's is_distinct_from for the dialect)."""
        terms = [
            a.is_distinct_from(b)
            for left, right in pairs
            for a, b in zip(self.compared(left), self.compared(right), strict=True)
        ]
        return sa.or_(*terms)

    def compared(self, column: sa.ColumnElement[Any]) -> list[sa.ColumnElement[Any]]:
        """What to compare of a cache column's values: the values themselves, where the database's
        equality tells every stored value apart."""
        return [column]

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT construct with ON CONFLICT support."""
        raise NotImplementedError


class Dialect(SourceDialect, CacheDialect):
    """A database that can be a source and the cache."""


def latest_per_key(staging: sa.Table, *, key: Sequence[str], updated_at: str | None) -> sa.Subquery:
    """Staged rows deduplicated by key, keeping the highest watermark (ROW_NUMBER over the key);
    without a watermark (`change_detection: hash` reads each key once) any one of them."""
    order = staging.c[updated_at].desc() if updated_at is not None else None
    rank = (
        sa.func.row_number()
        .over(partition_by=[staging.c[k] for k in key], order_by=order)
        .label("_sync_rank")
    )
    ranked = sa.select(*staging.columns, rank).subquery("ranked")
    names = [c.name for c in staging.columns]
    return sa.select(*[ranked.c[n] for n in names]).where(ranked.c._sync_rank == 1).subquery("latest")


def _family(type_: sa.types.TypeEngine[Any]) -> str:
    from sqlalchemy.sql import sqltypes

    for cls, family in (
        # Canonical text either way: a cache made when UUIDs were cached as VARCHAR(36) still fits.
        (sqltypes.Uuid, "string"),
        (sqltypes.Boolean, "boolean"),
        (sqltypes.Integer, "integer"),
        (sqltypes.Float, "float"),
        (sqltypes.Numeric, "decimal"),
        (sqltypes.DateTime, "datetime"),
        (sqltypes.Date, "date"),
        (sqltypes.Time, "time"),
        (sqltypes.String, "string"),
        (sqltypes._Binary, "binary"),
    ):
        if isinstance(type_, cls):
            return family
    return type(type_).__name__.lower()


_MODULES = {
    "sqlite": "sync_assets.dialects.sqlite",
    "postgresql": "sync_assets.dialects.postgresql",
    "duckdb": "sync_assets.dialects.duckdb",
    "oracle": "sync_assets.dialects.oracle",
    "sybase": "sync_assets.dialects.sybase",
    "mssql": "sync_assets.dialects.mssql",
}
_LOADED: dict[str, Database] = {}


def driver_error(error: BaseException) -> BaseException:
    """The driver's own exception inside a SQLAlchemy wrapper, or the error itself."""
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
        return error.orig
    return error


def source_only(name: str) -> str | None:
    """Why the database `name` (a SQLAlchemy dialect name) cannot be the cache; None if it can,
    or if it is not supported at all (connecting says so)."""
    if name not in _MODULES or isinstance(get_dialect(name), CacheDialect):
        return None
    caches = ", ".join(sorted(n for n in _MODULES if isinstance(get_dialect(n), CacheDialect)))
    return f"{name} is a source-only database and cannot be the cache (caches: {caches})"


def get_dialect(name: str) -> Database:
    """The Dialect for a SQLAlchemy dialect name (`engine.dialect.name`)."""
    if name not in _LOADED:
        if name not in _MODULES:
            supported = ", ".join(sorted(_MODULES))
            msg = f"database '{name}' is not supported yet (supported: {supported})"
            raise ValueError(msg)
        module = importlib.import_module(_MODULES[name])
        _LOADED[name] = module.DIALECT
    return _LOADED[name]
