"""What a catalog table reads from its source: columns (renamed, typed) and the SELECT."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
import sqlalchemy as sa

from sync_assets.catalog.models import TableSpec
from sync_assets.dialects import Dialect
from sync_assets.errors import ColumnNotFound, SyncError
from sync_assets.sync.types import ColumnType, needs_text_transport, polars_dtype


@dataclass(frozen=True)
class SourceColumn:
    """One column: its name in the source, in the cache, and its type (None until known)."""

    source_name: str
    name: str
    type: ColumnType | None
    expression: sa.ColumnElement[Any]


@dataclass(frozen=True)
class Source:
    table: TableSpec
    columns: list[SourceColumn]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> SourceColumn:
        return next(c for c in self.columns if c.name == name)

    def schema(self) -> dict[str, pl.DataType] | None:
        """The polars schema of batches; None while a query source's types are still unknown."""
        if any(c.type is None for c in self.columns):
            return None
        return {c.name: polars_dtype(c.type) for c in self.columns if c.type is not None}

    def select(
        self, *, low: Any = None, high: Any = None, types: dict[str, sa.types.TypeEngine[Any]] | None = None
    ) -> sa.Select[Any]:
        """All columns under their cache names; with bounds, only rows low <= watermark <= high.

        `types` casts each column to its cache type in the source query itself, for copies
        between two databases of the same kind that must agree on every column's wire format.
        """
        statement = sa.select(
            *[
                (sa.cast(c.expression, types[c.name]) if types else c.expression).label(c.name)
                for c in self.columns
            ]
        )
        if self.table.updated_at is not None:
            watermark = self.comparable(self.table.updated_at)
            if low is not None:
                statement = statement.where(watermark >= low)
            if high is not None:
                statement = statement.where(watermark <= high)
        return statement

    def max_watermark(self) -> sa.Select[Any]:
        """The upper bound of an incremental, read before extraction (uses the watermark index)."""
        if self.table.updated_at is None:
            msg = f"table '{self.table.name}' has no watermark column"
            raise SyncError(msg, table=self.table.name)
        return sa.select(sa.func.max(self.comparable(self.table.updated_at)))

    def comparable(self, name: str) -> sa.ColumnElement[Any]:
        """The source column itself, for comparisons: not the text cast it may be read through."""
        element = self.column(name).expression
        return element.clause if isinstance(element, sa.Cast) else element  # type: ignore[return-value]

    def with_types(self, types: dict[str, ColumnType]) -> Source:
        columns = [
            SourceColumn(c.source_name, c.name, c.type or types[c.name], c.expression) for c in self.columns
        ]
        return Source(self.table, columns)


def describe(conn: sa.Connection, table: TableSpec, dialect: Dialect) -> Source:
    """Reflect the source table (or look at a query's columns) and apply the catalog's renames."""
    if table.source_table is not None:
        from_clause, typed = _reflect(conn, table, dialect)
    else:
        from_clause, typed = _query(conn, table), False
    columns: list[SourceColumn] = []
    for col in from_clause.columns:
        source_name = str(col.name)
        name = table.columns.get(source_name, source_name)
        ct = dialect.source_type(col.type, table=table.name, column=source_name) if typed else None
        expression: sa.ColumnElement[Any] = col
        if ct is not None and needs_text_transport(col.type, ct):
            expression = sa.cast(col, sa.Text)
        columns.append(SourceColumn(source_name, name, ct, expression))
    source = Source(table, columns)
    _check_columns(source)
    return source


def _reflect(conn: sa.Connection, table: TableSpec, dialect: Dialect) -> tuple[sa.Table, bool]:
    assert table.source_table is not None
    try:
        reflected = sa.Table(
            table.source_table, sa.MetaData(), schema=table.source_schema, autoload_with=conn
        )
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


def _check_columns(source: Source) -> None:
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
