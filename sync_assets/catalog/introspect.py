"""What a source database says about its tables: names matching a pattern, columns, keys, indexes.

Read through SQLAlchemy's inspector and the dialect's own reflection (`SourceDialect.reflect_table`),
so the types are the ones a sync would see; nothing here writes or guesses.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync_assets.dialects.base import SourceDialect
from sync_assets.errors import UnsupportedType
from sync_assets.types import ColumnType


class IntrospectionError(Exception):
    """A table the command was asked for that the source does not show; the message names it."""


@dataclass(frozen=True)
class ReflectedColumn:
    name: str  # as the catalog writes it (the dialect's spelling: Oracle's upper case)
    type_text: str  # the source's own DDL type, e.g. NUMBER(8, 0)
    type: ColumnType | None  # None: sync_assets cannot read it, `problem` says why
    nullable: bool
    problem: str | None = None
    fixed_width: bool = False  # CHAR/NCHAR: padded with trailing spaces


@dataclass(frozen=True)
class UniqueKey:
    name: str | None
    columns: tuple[str, ...]
    kind: str  # "unique constraint" or "unique index"


@dataclass(frozen=True)
class ReflectedTable:
    name: str
    schema: str | None
    columns: tuple[ReflectedColumn, ...]
    primary_key: tuple[str, ...]
    primary_key_name: str | None
    unique_keys: tuple[UniqueKey, ...]
    leading_index_columns: frozenset[str]  # columns an index (or the key) starts with: range scans
    zonemaps: bool = False  # the database keeps min-max zonemaps of every column (DuckDB)

    def serves_ranges(self, column: str) -> bool:
        """A range on `column` (an incremental's watermark) can skip the rest of the table."""
        return self.zonemaps or column in self.leading_index_columns

    @property
    def where(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def column(self, name: str) -> ReflectedColumn:
        return next(c for c in self.columns if c.name == name)


def split_name(argument: str) -> tuple[str | None, str]:
    """`SCHEMA.NAME` -> (SCHEMA, NAME); a bare name has no schema (the connection's default)."""
    schema, dot, name = argument.rpartition(".")
    if not name or (dot and not schema):
        msg = f"'{argument}' is not a table name (NAME, SCHEMA.NAME, or a pattern such as PRODDTA.F48*)"
        raise IntrospectionError(msg)
    return (schema or None), name


def matching_tables(
    conn: sa.Connection, dialect: SourceDialect, arguments: list[str]
) -> list[tuple[str | None, str]]:
    """(schema, table) of every table or view an argument names or matches (`*`, `?`, `[...]`),
    case-insensitively, in argument then name order, each once; an argument matching nothing fails."""
    inspector = sa.inspect(conn)
    listed: dict[str | None, list[str]] = {}
    found: list[tuple[str | None, str]] = []
    for argument in arguments:
        schema, pattern = split_name(argument)
        if schema not in listed:
            try:
                names = inspector.get_table_names(schema=schema) + inspector.get_view_names(schema=schema)
            except sa.exc.NoSuchTableError:
                names = []
            # The dialect spells names as catalogs write them (Oracle: F4801, not f4801); its
            # rule for column names is the one for table names.
            listed[schema] = sorted({dialect.source_column_name(n) for n in names})
        hits = [n for n in listed[schema] if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
        if not hits:
            where = f"schema {schema}" if schema else "the connection's default schema"
            msg = f"no table in {where} matches '{pattern}' (or it is not visible to this user)"
            raise IntrospectionError(msg)
        found += [(schema, n) for n in hits if (schema, n) not in found]
    return found


def describe(conn: sa.Connection, dialect: SourceDialect, schema: str | None, name: str) -> ReflectedTable:
    """The table's columns (with the types a sync would read), its key and its indexes."""
    try:
        table = dialect.reflect_table(conn, name, schema=schema)
    except sa.exc.NoSuchTableError:
        where = f"{schema}.{name}" if schema else name
        msg = f"source table {where} does not exist (or is not visible to this user)"
        raise IntrospectionError(msg) from None
    spelled = {c.name: dialect.source_column_name(c.name) for c in table.columns}
    columns = tuple(_column(conn, dialect, name, c, spelled[c.name]) for c in table.columns)
    key = tuple(spelled[c.name] for c in table.primary_key.columns)
    unique = [
        UniqueKey(u.name, tuple(spelled[c.name] for c in u.columns), "unique constraint")
        for u in table.constraints
        if isinstance(u, sa.UniqueConstraint) and u.columns
    ]
    leading = {key[0]} if key else set()
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        names = [spelled[c.name] for c in index.columns if c.name in spelled]
        if len(names) != len(index.expressions) or not names:
            continue  # an index on expressions: neither a key nor a range scan of a column
        leading.add(names[0])
        if index.unique:
            unique.append(UniqueKey(index.name, tuple(names), "unique index"))
    return ReflectedTable(
        name=name,
        schema=schema,
        columns=columns,
        primary_key=key,
        primary_key_name=table.primary_key.name if key else None,
        unique_keys=tuple(unique),
        leading_index_columns=frozenset(leading),
        zonemaps=dialect.capabilities.zonemaps,
    )


def _column(
    conn: sa.Connection, dialect: SourceDialect, table: str, column: sa.Column[Any], name: str
) -> ReflectedColumn:
    try:
        type_text = str(column.type.compile(dialect=conn.dialect))
    except sa.exc.CompileError:
        type_text = type(column.type).__name__
    fixed = isinstance(column.type, sa.CHAR | sa.NCHAR)
    try:
        ct = dialect.source_type(column.type, table=table, column=name)
    except UnsupportedType as err:
        return ReflectedColumn(name, type_text, None, bool(column.nullable), problem=str(err))
    return ReflectedColumn(name, type_text, ct, bool(column.nullable), fixed_width=fixed)
