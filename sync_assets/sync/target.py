"""The cache table a source maps to: created when missing, refused when it no longer fits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
import sqlalchemy as sa

from sync_assets.dialects import CacheDialect
from sync_assets.errors import LossyType, SchemaMismatch
from sync_assets.sources.base import Source
from sync_assets.types import Kind


def target_table(source: Source, dialect: CacheDialect) -> sa.Table:
    """The target's definition: mapped types, the primary key, an index on the watermark where
    the cache wants one (`Capabilities.watermark_index`).

    Raises LossyType when the cache cannot hold a column exactly and `allow_lossy` does not name it.
    """
    spec = source.table
    accepted = set(spec.allow_lossy)
    indexed = {*spec.primary_key, *([spec.updated_at] if spec.updated_at else [])}
    columns = []
    for c in source.columns:
        assert c.type is not None
        loss = dialect.loss(c.type)
        if loss is not None and c.name not in accepted and "*" not in accepted:
            raise LossyType(spec.name, c.name, c.type.describe(), loss)
        columns.append(
            sa.Column(
                c.name,
                dialect.key_column_type(c.type) if c.name in indexed else dialect.column_type(c.type),
                primary_key=c.name in spec.primary_key,
                nullable=c.name not in spec.primary_key,
                autoincrement=False,  # keys come from the source, never from the cache
            )
        )
    # The watermark's name travels with the table, for caches that do not index it (DuckDB).
    table = sa.Table(spec.target, sa.MetaData(), *columns, info={"updated_at": spec.updated_at})
    if spec.updated_at is not None and dialect.capabilities.watermark_index:
        name = f"ix_{spec.target}_{spec.updated_at}"[: dialect.capabilities.max_identifier_length]
        sa.Index(name, table.c[spec.updated_at])
    return table


def existing_target(conn: sa.Connection, name: str) -> sa.Table | None:
    """The cache table as it is now (reflected), or None before its first sync."""
    if not sa.inspect(conn).has_table(name):
        return None
    return sa.Table(name, sa.MetaData(), autoload_with=conn)


def check_existing(
    conn: sa.Connection, wanted: sa.Table, dialect: CacheDialect, *, table: str, addable: Sequence[str] = ()
) -> bool:
    """True if the target exists and fits; False if it must be created; SchemaMismatch otherwise.

    Columns named in `addable` may be missing: `columns_to_add` lists them for the commit.
    """
    inspector = sa.inspect(conn)
    if not inspector.has_table(wanted.name):
        return False
    existing = {c["name"]: c for c in inspector.get_columns(wanted.name)}
    problems: list[str] = []
    for column in wanted.columns:
        found = existing.get(column.name)
        if found is None and column.name in addable:
            continue
        if found is None:
            problems.append(f"column '{column.name}' is missing from the target")
            continue
        have, want = dialect.type_family(found["type"]), dialect.type_family(column.type)
        if have != want:
            problems.append(
                f"column '{column.name}' is {found['type']} in the target, the source delivers {want}"
            )
    for name in existing.keys() - set(wanted.columns.keys()):
        problems.append(f"target column '{name}' is no longer delivered by the source")
    key = inspector.get_pk_constraint(wanted.name).get("constrained_columns") or []
    wanted_key = [c.name for c in wanted.primary_key.columns]
    if sorted(key) != sorted(wanted_key):
        problems.append(
            f"target primary key is ({', '.join(key)}), the catalog says ({', '.join(wanted_key)})"
        )
    if problems:
        msg = (
            f"table '{table}': target table {wanted.name} no longer matches its source; nothing was changed: "
            + "; ".join(problems)
        )
        raise SchemaMismatch(msg, table=table)
    return True


def columns_to_add(conn: sa.Connection, wanted: sa.Table, addable: Sequence[str]) -> list[sa.Column[Any]]:
    """The `addable` columns of `wanted` that the existing target lacks."""
    if not addable or not sa.inspect(conn).has_table(wanted.name):
        return []
    present = {c["name"] for c in sa.inspect(conn).get_columns(wanted.name)}
    return [wanted.c[name] for name in addable if name not in present]


def cache_value_fixes(source: Source, dialect: CacheDialect) -> list[pl.Expr]:
    """Expressions that bring a batch to the values the cache stores: timestamps and times that
    `allow_lossy` accepts, cut to the cache's fractional digits; UUIDs in canonical lower case.

    Left to the databases, DuckDB and SQL Server would round instead, even into the next second
    (23:59:59.999999999 became 24:00:00); truncating here gives every cache the same values.
    """
    cuts = canonical_uuids(source)
    for c in source.columns:
        if c.type is None or c.type.kind not in (Kind.DATETIME, Kind.TIME):
            continue
        digits = dialect.fractional_digits(c.type)
        if (c.type.precision or 0) <= digits:
            continue
        step = 10 ** (9 - digits)  # nanoseconds
        column = pl.col(c.name)
        if c.type.kind is Kind.TIME:
            cuts.append((column.cast(pl.Int64) // step * step).cast(pl.Time).alias(c.name))
        else:
            cuts.append(column.dt.truncate(f"{step}ns").alias(c.name))
    return cuts


def canonical_uuids(source: Source) -> list[pl.Expr]:
    """UUID text in its canonical lower case (RFC 9562); SQL Server hands out upper case."""
    return [pl.col(c.name).str.to_lowercase() for c in source.columns if c.type and c.type.kind is Kind.UUID]
