"""The SQL source: a table or a query of a source database, read in batches or copied directly.

`SqlTable` is what a catalog table reads (columns renamed and typed, the SELECT, the watermark in
the source's terms, JDE conventions); `SqlSource` reads it for a sync, through the `Source`
interface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import sqlalchemy as sa

from sync_assets.batches import mapped, read_ahead, read_batches
from sync_assets.catalog.changes import HASH_COLUMN
from sync_assets.catalog.jde import JdeOptions
from sync_assets.catalog.models import TableSpec
from sync_assets.dialects import CacheDialect, SourceDialect
from sync_assets.dialects.row_hash import RowHash
from sync_assets.errors import ColumnNotFound, DataError, SyncError
from sync_assets.sources import jde
from sync_assets.sources.base import DirectCopy, Log, Source, Window
from sync_assets.sync.key_ranges import Side, key_chunks, matching
from sync_assets.types import ColumnType, Kind, from_polars, polars_dtype


@dataclass(frozen=True)
class SourceColumn:
    """One column: its name in the source, in the cache, and its type (None until known).

    `type` is what the cache holds; `read_type` what the source delivers, where a `jde` transform
    changes it. A `computed` column (a JDE date + time) is not read: its `expression` is the
    watermark in source terms (CYYDDD * 1000000 + HHMMSS), for comparisons only.
    """

    source_name: str
    name: str
    type: ColumnType | None
    expression: sa.ColumnElement[Any]
    read_type: ColumnType | None = None
    computed: bool = False


@dataclass(frozen=True)
class JdeWatermark:
    """A watermark stored the JDE way: a CYYDDD date column and, optionally, an HHMMSS time column."""

    day: sa.ColumnElement[Any]
    hhmmss: sa.ColumnElement[Any] | None


@dataclass(frozen=True)
class SqlTable:
    table: TableSpec
    columns: list[SourceColumn]
    transform: jde.Transform | None = None  # applied to every batch after it is read
    jde_watermark: JdeWatermark | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> SourceColumn:
        return next(c for c in self.columns if c.name == name)

    def schema(self) -> dict[str, pl.DataType] | None:
        """The polars schema of batches as read (before any `jde` transform); None while a query
        source's types are still unknown."""
        read = [c for c in self.columns if not c.computed]
        if any((c.read_type or c.type) is None for c in read):
            return None
        if self.transform is not None and any(
            c.read_type is None for c in read if c.name in self.transform.changes
        ):
            return None  # a query source: only its transformed types were settled
        return {c.name: polars_dtype(c.read_type or c.type) for c in read}  # type: ignore[arg-type]

    def cache_schema(self) -> dict[str, pl.DataType] | None:
        """The polars schema of batches once transformed: what the cache holds."""
        if any(c.type is None for c in self.columns):
            return None
        return {c.name: polars_dtype(c.type) for c in self.columns if c.type is not None}

    @property
    def read_names(self) -> list[str]:
        """The columns the SELECT returns (computed ones are added by the transform)."""
        return [c.name for c in self.columns if not c.computed]

    def transformed(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame if self.transform is None else self.transform.apply(frame)

    def select(
        self,
        *,
        low: Any = None,
        high: Any = None,
        below: Any = None,
        types: dict[str, sa.types.TypeEngine[Any]] | None = None,
        keys: Sequence[tuple[Any, ...]] | None = None,
    ) -> sa.Select[Any]:
        """All columns under their cache names; with bounds, only rows low <= watermark <= high
        (and watermark < below); with `keys`, only the rows of those primary keys.

        `types` casts each column to its cache type in the source query itself, for copies
        between two databases of the same kind that must agree on every column's wire format.
        """
        statement = sa.select(
            *[
                (sa.cast(c.expression, types[c.name]) if types else c.expression).label(c.name)
                for c in self.columns
                if not c.computed
            ]
        )
        statement = statement.where(*self.watermark_range(low=low, high=high, below=below))
        return statement if keys is None else statement.where(matching(self.key, keys))

    @property
    def key(self) -> list[sa.ColumnElement[Any]]:
        """The primary key columns in the source's terms, in key order."""
        return [self.comparable(k) for k in self.table.primary_key]

    def windows(self, window: Window) -> Iterator[Window]:
        """`window` as statements can take it: a long list of keys in pieces."""
        if window.keys is None:
            yield window
            return
        for chunk in key_chunks(window.keys, len(self.table.primary_key)):
            yield dataclasses.replace(window, keys=chunk)

    def watermark_range(
        self, *, low: Any = None, high: Any = None, below: Any = None
    ) -> list[sa.ColumnElement[bool]]:
        """low <= watermark <= high, watermark < below, in the source's own terms (bounds are
        cache values: a JDE watermark's are converted to CYYDDD/HHMMSS, its date range leading)."""
        if self.table.updated_at is None:
            return []
        bounds = [(">=", low), ("<=", high), ("<", below)]
        mark = self.jde_watermark
        if mark is None:
            watermark = self.comparable(self.table.updated_at)
            ops = {">=": watermark.__ge__, "<=": watermark.__le__, "<": watermark.__lt__}
            return [ops[op](value) for op, value in bounds if value is not None]
        where = [
            jde.watermark_bound(mark.day, mark.hhmmss, op, value) for op, value in bounds if value is not None
        ]  # type: ignore[arg-type]
        if where and low is None:
            where.insert(0, jde.has_date(mark.day))  # 0 = no date: a NULL watermark in the cache
        return where

    def max_watermark(self) -> sa.Select[Any]:
        """The upper bound of an incremental, read before extraction (uses the watermark index);
        a JDE watermark's select returns (CYYDDD, HHMMSS): use `read_max_watermark`."""
        if self.table.updated_at is None:
            msg = f"table '{self.table.name}' has no watermark column"
            raise SyncError(msg, table=self.table.name)
        if self.jde_watermark is not None:
            mark = self.jde_watermark
            return jde.max_watermark(_from_clause(mark.day), mark.day, mark.hhmmss)
        return sa.select(sa.func.max(self.comparable(self.table.updated_at)))

    def read_max_watermark(self, conn: sa.Connection) -> Any:
        """The source's newest watermark, as the cache holds it."""
        if self.jde_watermark is None:
            return conn.execute(self.max_watermark()).scalar()
        row = conn.execute(self.max_watermark()).first()
        if row is None:
            return None
        day = int(row[0]) if row[0] is not None else None
        if self.jde_watermark.hhmmss is None:
            return jde.from_julian(day)
        return jde.from_jde(day, int(row[1]) if row[1] is not None else None)

    def comparable(self, name: str) -> sa.ColumnElement[Any]:
        """The source column itself, for comparisons: not the text cast it may be read through."""
        element = self.column(name).expression
        return element.clause if isinstance(element, sa.Cast) else element  # type: ignore[return-value]

    def with_types(self, types: dict[str, ColumnType]) -> SqlTable:
        columns = [
            SourceColumn(
                c.source_name, c.name, c.type or types[c.name], c.expression, c.read_type, c.computed
            )
            for c in self.columns
        ]
        return SqlTable(self.table, columns, self.transform, self.jde_watermark)


class SqlSource(Source):
    """A catalog table read from a source database over one open connection."""

    def __init__(
        self, conn: sa.Connection, dialect: SourceDialect, described: SqlTable, *, batch_size: int, log: Log
    ) -> None:
        self.conn, self.dialect, self.described = conn, dialect, described
        self.table = described.table
        self.batch_size, self.log = batch_size, log
        self._read_path_told = False

    @classmethod
    def open(
        cls, conn: sa.Connection, dialect: SourceDialect, table: TableSpec, *, batch_size: int, log: Log
    ) -> SqlSource:
        """The table as reflected now (or the query's columns), renames applied."""
        return cls(conn, dialect, reflect(conn, table, dialect), batch_size=batch_size, log=log)

    @property
    def columns(self) -> Sequence[SourceColumn]:
        return self.described.columns

    @property
    def typed(self) -> bool:
        return self.described.schema() is not None

    def max_watermark(self) -> Any:
        return self.described.read_max_watermark(self.conn)

    def is_transient(self, error: BaseException) -> bool:
        return self.dialect.is_transient(error)

    def batches(self, window: Window | None) -> Generator[pl.DataFrame]:
        """The `jde` transforms run here, whatever the read path: the driver's Arrow reader where
        the table allows it and the driver has one, else rows through the DB-API cursor."""
        described = self.described
        batches = self._read(window or Window())
        numeric_text = [
            c.name
            for c in described.columns
            if not c.computed
            and (c.read_type or c.type) is not None
            and (c.read_type or c.type).kind is Kind.DECIMAL  # type: ignore[union-attr]
            and polars_dtype(c.read_type or c.type) == pl.String()  # type: ignore[arg-type]
        ]
        if numeric_text:
            batches = mapped(batches, lambda frame: numbers_only(frame, numeric_text, table=self.table.name))
        return batches if described.transform is None else mapped(batches, described.transformed)

    def compared(self) -> Side:
        described, table = self.described, self.table
        key = described.key
        hashed = described.column(HASH_COLUMN).expression if table.by_hash else None
        return Side(self.conn, _from_clause(key[0]), key, hashed)

    def _read(self, window: Window) -> Generator[pl.DataFrame]:
        if window.keys is None:
            return self._read_statement(window)
        return (frame for part in self.described.windows(window) for frame in self._read_statement(part))

    def _read_statement(self, window: Window) -> Generator[pl.DataFrame]:
        described = self.described
        statement = described.select(low=window.low, high=window.high, keys=window.keys)
        schema = described.schema()
        if schema is not None and self.table.arrow_read:
            fast = self.dialect.arrow_batches(
                self.conn, statement, schema=schema, table=self.table.name, batch_size=self.batch_size
            )
            if fast is not None:
                self._tell_read_path("the driver's Arrow batches")
                # Read the next batch while the cache loads this one.
                return read_ahead(fast) if self.dialect.capabilities.independent_reader else fast  # type: ignore[return-value]
        self._tell_read_path("rows")
        return read_batches(
            self.conn, statement, schema=schema, batch_size=self.batch_size, table=self.table.name
        )

    def _tell_read_path(self, path: str) -> None:
        """Once per sync: whether an Arrow reader took the table (a connection's opt-in, a
        column type it refuses and `arrow_read: false` all end in rows)."""
        if not self._read_path_told:
            self._read_path_told = True
            self.log(f"table '{self.table.name}': reading through {path}")

    def settled(self, first: pl.DataFrame | None) -> SqlSource:
        """A query takes its column types from its first batch."""
        if self.typed:
            return self
        if first is None:
            msg = (
                f"table '{self.table.name}': the query returned no rows, so its column types are unknown "
                "and the target cannot be created"
            )
            raise DataError(msg, table=self.table.name)
        types = {
            name: from_polars(dtype, table=self.table.name, column=name)
            for name, dtype in first.schema.items()
        }
        return SqlSource(
            self.conn,
            self.dialect,
            self.described.with_types(types),
            batch_size=self.batch_size,
            log=self.log,
        )

    def direct_copy(self, cache: sa.Connection, dialect: CacheDialect, target: sa.Table) -> DirectCopy | None:
        """Same kind of database on both ends, a plain table, no `jde` transform: the databases
        copy the rows themselves, cast to the cache types in the source query where the cache asks."""
        table, described = self.table, self.described
        if not table.direct_copy or table.query is not None or table.source_schema is not None:
            return None
        if described.transform is not None:
            return None  # the database cannot apply the `jde` transforms
        kinds = {c.name: c.type.kind for c in described.columns if c.type is not None}
        if not dialect.can_copy(self.conn, cache, target, kinds):
            return None
        types = {c.name: c.type for c in target.columns} if dialect.cast_for_copy() else None

        def copy(window: Window | None, dest: sa.Table) -> int:
            copied = 0
            for part in described.windows(window or Window()):
                statement = described.select(low=part.low, high=part.high, types=types, keys=part.keys)
                copied += dialect.copy_rows(self.conn, statement, cache, dest, log=self.log)
            return copied

        return DirectCopy(session=lambda: dialect.copy_session(self.conn, cache), copy=copy)


def reflect(conn: sa.Connection, table: TableSpec, dialect: SourceDialect) -> SqlTable:
    """Reflect the source table (or look at a query's columns) and apply the catalog's renames."""
    if table.source_table is not None:
        from_clause, typed = _reflect(conn, table, dialect)
    else:
        from_clause, typed = _query(conn, table), False
    source = SqlTable(table, source_columns(table, from_clause, dialect, typed=typed))
    if table.jde is not None:
        source = _with_jde(source)
    source = _with_change_columns(source)
    _check_columns(source)
    return source


# A soft-deleted row's deletion time, in UTC.
DELETED_AT = ColumnType(Kind.DATETIME, precision=6)


def _with_change_columns(source: SqlTable) -> SqlTable:
    """The columns the source computes for change detection: each row's hash (for `change_detection:
    hash`), NULL for the soft-delete stamp (the cache sets it)."""
    table = source.table
    extra = []
    if table.by_hash:
        read = [_bare(c.expression) for c in source.columns if not c.computed]
        extra.append(
            SourceColumn(HASH_COLUMN, HASH_COLUMN, ColumnType(Kind.INTEGER, bits=64), RowHash(*read))
        )
    soft = table.deletes.soft_column if table.deletes else None
    if soft is not None:
        extra.append(SourceColumn(soft, soft, DELETED_AT, sa.cast(sa.null(), sa.DateTime())))
    return dataclasses.replace(source, columns=[*source.columns, *extra]) if extra else source


def source_columns(
    table: TableSpec, from_clause: sa.FromClause, dialect: SourceDialect, *, typed: bool
) -> list[SourceColumn]:
    """The columns of a reflected table (`typed`) or a query: named, renamed and read as the dialect says."""
    columns: list[SourceColumn] = []
    for col in from_clause.columns:
        source_name = dialect.source_column_name(col.name)
        name = table.columns.get(source_name, source_name)
        ct = dialect.source_type(col.type, table=table.name, column=source_name) if typed else None
        expression = col if ct is None else dialect.source_expression(col, ct)
        columns.append(SourceColumn(source_name, name, ct, expression))
    return columns


def _reflect(conn: sa.Connection, table: TableSpec, dialect: SourceDialect) -> tuple[sa.Table, bool]:
    assert table.source_table is not None
    try:
        reflected = dialect.reflect_table(conn, table.source_table, schema=table.source_schema)
    except sa.exc.NoSuchTableError:
        where = f"{table.source_schema}.{table.source_table}" if table.source_schema else table.source_table
        msg = f"table '{table.name}': source table {where} does not exist (or is not visible to this user)"
        raise SyncError(msg, table=table.name) from None
    return reflected, True


def _query(conn: sa.Connection, table: TableSpec) -> sa.Subquery:
    assert table.query is not None
    probe = sa.text(table.query).columns().subquery("q")
    keys = list(conn.execute(sa.select(sa.literal_column("*")).select_from(probe).where(sa.false())).keys())
    return sa.text(table.query).columns(*[sa.column(k) for k in keys]).subquery("q")


def _check_columns(source: SqlTable) -> None:
    table = source.table
    source_names = {c.source_name for c in source.columns}
    for renamed in table.columns:
        if renamed not in source_names:
            raise ColumnNotFound(table.name, renamed, "renamed", sorted(source_names))
    names = source.names
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        msg = f"table '{table.name}': two source columns end up named '{dup}' after renames"
        raise SyncError(msg, table=table.name)
    for key in table.primary_key:
        if key not in names:
            raise ColumnNotFound(table.name, key, "primary key", names)
    if table.updated_at is not None and table.updated_at not in names:
        raise ColumnNotFound(table.name, table.updated_at, "updated_at (watermark)", names)
    for lossy in table.allow_lossy:
        if lossy != "*" and lossy not in names:
            raise ColumnNotFound(table.name, lossy, "allow_lossy", names)


# A decimal as exact text: what PostgreSQL, Oracle and SQL Server print for a number (NaN and the
# infinities included: PostgreSQL's numeric holds them).
_NUMBER_TEXT = r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$|^(?:NaN|[+-]?Infinity)$"


def numbers_only(frame: pl.DataFrame, columns: list[str], *, table: str) -> pl.DataFrame:
    """`frame` once every value of `columns` (decimals carried as text) is a number. SQLite keeps
    any text in a NUMERIC column; as text the value would pass into the cache unchecked."""
    for name in columns:
        column = frame.get_column(name)
        bad = column.is_not_null() & ~column.str.contains(_NUMBER_TEXT)
        if bad.any():
            shown = repr(column.filter(bad)[0])[:80]
            msg = f"table '{table}': column '{name}': source value {shown} is not a number (a decimal column)"
            raise DataError(msg, table=table)
    return frame


def _from_clause(column: sa.ColumnElement[Any]) -> sa.FromClause:
    table = getattr(column, "table", None)
    assert table is not None, "a JDE watermark column belongs to the source table"
    return table


def _with_jde(source: SqlTable) -> SqlTable:
    """The source under the table's `jde:` options: transformed cache types, new date + time
    columns, the batch transform and the watermark in source terms."""
    table = source.table
    options = table.jde
    assert options is not None
    by_source = {c.source_name: c for c in source.columns}

    def find(name: str, role: str, *, numeric: bool = True) -> SourceColumn:
        column = by_source.get(name)
        if column is None:
            known = ", ".join(sorted(by_source))
            msg = f"table '{table.name}': jde {role} column '{name}' is not in the source (columns: {known})"
            raise SyncError(msg, table=table.name)
        kind = column.type.kind if column.type is not None else None
        wanted = (Kind.INTEGER, Kind.DECIMAL, Kind.FLOAT) if numeric else (Kind.STRING,)
        if kind is not None and kind not in wanted:
            what = "a number" if numeric else "text"
            msg = f"table '{table.name}': jde {role} column '{name}' is {column.type.describe()}, not {what}"  # type: ignore[union-attr]
            raise SyncError(msg, table=table.name)
        return column

    retyped: dict[str, ColumnType] = {}
    for name in options.julian_dates:
        retyped[find(name, "julian_dates").name] = ColumnType(Kind.DATE)
    decimals = []
    for name, places in options.implied_decimals.items():
        column = find(name, "implied_decimals")
        ct = column.type
        digits = ct.precision if ct is not None and ct.kind is Kind.DECIMAL and ct.precision else None
        precision = max(digits, places + 1) if digits else jde.JDE_MAX_DIGITS
        decimals.append(jde.Decimals(column.name, places, precision))
        retyped[column.name] = ColumnType(Kind.DECIMAL, precision=precision, scale=places)
    if isinstance(options.trim, list):
        trimmed = [find(n, "trim", numeric=False).name for n in options.trim]
    elif options.trim:
        trimmed = [c.name for c in source.columns if c.type is not None and c.type.kind is Kind.STRING]
    else:
        trimmed = []
    columns = [
        SourceColumn(
            c.source_name,
            c.name,
            retyped.get(c.name, c.type),
            c.expression,
            read_type=c.type if c.name in retyped or c.name in trimmed else None,
        )
        for c in source.columns
    ]
    timestamps = []
    for name, (day_name, time_name) in options.times.items():
        day, hhmmss = find(day_name, f"times.{name}"), find(time_name, f"times.{name}")
        if name in source.names:
            msg = f"table '{table.name}': jde times column '{name}' is already a source column"
            raise SyncError(msg, table=table.name)
        comparable = _bare(day.expression) * 1_000_000 + sa.func.coalesce(_bare(hhmmss.expression), 0)
        columns.append(
            SourceColumn(name, name, ColumnType(Kind.DATETIME, precision=0), comparable, computed=True)
        )
        timestamps.append(jde.Timestamp(name, day.name, hhmmss.name))
    transform = jde.Transform(
        table.name,
        julian_dates=tuple(c.name for c in source.columns if c.source_name in options.julian_dates),
        timestamps=tuple(timestamps),
        decimals=tuple(decimals),
        trim=tuple(trimmed),
    )
    return SqlTable(table, columns, transform, _jde_watermark(source, options))


def _jde_watermark(source: SqlTable, options: JdeOptions) -> JdeWatermark | None:
    updated_at = source.table.updated_at
    by_source = {c.source_name: c for c in source.columns}
    if updated_at in options.times:
        day_name, time_name = options.times[updated_at]
        return JdeWatermark(_bare(by_source[day_name].expression), _bare(by_source[time_name].expression))
    julian = {by_source[n].name: by_source[n] for n in options.julian_dates}
    if updated_at in julian:
        return JdeWatermark(_bare(julian[updated_at].expression), None)
    return None


def _bare(element: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The source column itself, not the text cast it may be read through."""
    return element.clause if isinstance(element, sa.Cast) else element  # type: ignore[return-value]
