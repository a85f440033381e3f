"""Source/cache reconciliation over the settled range: row counts, and optionally row checksums."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl
import sqlalchemy as sa

from sync_assets.batches import to_frame
from sync_assets.catalog.models import Catalog, TableSpec
from sync_assets.catalog.operations import Verification
from sync_assets.checks.common import (
    CheckResources,
    Connections,
    SettledRange,
    TableCheck,
    connect,
    last_sync,
    missing_columns,
    not_synced,
    settled_range,
    shown_key,
    table_check,
)
from sync_assets.sources.sql import SqlTable
from sync_assets.sync.target import canonical_uuids

RECONCILIATION = "reconciliation"
DEEP_RECONCILIATION = "deep_reconciliation"
MAX_REPORTED_RANGES = 20
WARN = dg.AssetCheckSeverity.WARN


def reconciliation_checks(catalog: Catalog, table: TableSpec, asset_key: dg.AssetKey) -> list[TableCheck]:
    """Row counts always; checksums per key range when the table asks for `verify: {deep: true}`."""
    checks = [_count_check(catalog, table, asset_key)]
    if table.verify.deep:
        checks.append(_deep_check(catalog, table, asset_key))
    return checks


@dataclass(frozen=True)
class _Sides:
    """What both comparisons start from, or the result to give when there is nothing to compare."""

    source: SqlTable
    target: sa.Table
    settled: SettledRange


def _sides(opened: Connections, catalog: Catalog, table: TableSpec) -> _Sides | dg.AssetCheckResult:
    target = opened.target(table)
    last = last_sync(opened.cache, table)
    if target is None or last is None:
        return not_synced(table)
    source_conn, _ = opened.require_source()
    source = opened.source_table(table)
    absent = missing_columns(table, target, source.names, severity=WARN, what="of the source")
    if absent is not None:
        return absent
    settled = settled_range(catalog, table, source=source, source_conn=source_conn, last=last)
    return _Sides(source, target, settled)


def _count_check(catalog: Catalog, table: TableSpec, asset_key: dg.AssetKey) -> TableCheck:
    def evaluate(resources: CheckResources) -> dg.AssetCheckResult:
        with connect(resources, table, source=True) as opened:
            sides = _sides(opened, catalog, table)
            if isinstance(sides, dg.AssetCheckResult):
                return sides
            source_conn, _ = opened.require_source()
            source_rows = _count(source_conn, sides.settled.source_select(sides.source))
            cache_select = sa.select(sides.target).where(*sides.settled.cache_where(sides.target))
            cache_rows = _count(opened.cache, cache_select)
        where = sides.settled.describe()
        if source_rows == cache_rows:
            description = f"source and cache both hold {source_rows} rows with {where}"
        else:
            description = f"the source holds {source_rows} rows with {where}, the cache {cache_rows}"
        return dg.AssetCheckResult(
            passed=source_rows == cache_rows,
            severity=WARN,
            metadata={
                "source_rows": source_rows,
                "cache_rows": cache_rows,
                "difference": cache_rows - source_rows,
                "range": where,
            },
            description=f"table '{table.name}': {description}",
        )

    return table_check(
        RECONCILIATION,
        asset_key,
        evaluate,
        description="Source and cache hold the same number of rows, rows newer than the lookback aside",
    )


def _count(conn: sa.Connection, statement: sa.Select[Any]) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(statement.subquery())).scalar_one()


def _deep_check(catalog: Catalog, table: TableSpec, asset_key: dg.AssetKey) -> TableCheck:
    def evaluate(resources: CheckResources) -> dg.AssetCheckResult:
        with connect(resources, table, source=True) as opened:
            sides = _sides(opened, catalog, table)
            if isinstance(sides, dg.AssetCheckResult):
                return sides
            source_conn, _ = opened.require_source()
            comparison = _DeepComparison(source_conn, opened.cache, sides=sides, verify=table.verify)
            comparison.run()
        return comparison.result(table)

    return table_check(
        DEEP_RECONCILIATION,
        asset_key,
        evaluate,
        description="Row checksums per key range; differing ranges are bisected and named",
    )


@dataclass(frozen=True)
class _Difference:
    first_key: Any
    last_key: Any
    source_rows: int
    cache_rows: int

    def describe(self) -> str:
        last = "end" if self.last_key is None else self.last_key
        return f"{self.first_key}..{last} (source {self.source_rows} rows, cache {self.cache_rows})"


class _DeepComparison:
    """Compares the settled rows segment by segment, in primary key order.

    Each segment is at most `segment_rows` source rows (keyset pagination) plus the cache rows of
    the same key range, read only while they number at most twice that: memory stays bounded by
    the segment size whatever the table size.
    """

    def __init__(
        self, source_conn: sa.Connection, cache_conn: sa.Connection, *, sides: _Sides, verify: Verification
    ) -> None:
        self.source_conn, self.cache_conn = source_conn, cache_conn
        self.source, self.target, self.settled = sides.source, sides.target, sides.settled
        self.verify = verify
        self.key = sides.source.table.primary_key
        self.names = sides.source.names
        self.read_names = sides.source.read_names
        self.schema = sides.source.schema()  # None for a query source until its first segment
        self.cache_schema = sides.source.cache_schema()  # the same, after any `jde` transform
        self.differences: list[_Difference] = []
        self.segments = self.source_rows = self.cache_rows = 0

    def run(self) -> None:
        settled = self.settled.source_select(self.source).subquery("settled")
        source_key = [settled.c[k] for k in self.key]
        cache_key = [self.target.c[k] for k in self.key]
        # Keys as the source holds them page the source; as the cache holds them (after a `jde`
        # transform, which keeps their order) they bound the cache side.
        after: tuple[Any, ...] | None = None
        after_cached: tuple[Any, ...] | None = None
        while True:
            statement = sa.select(*[settled.c[n] for n in self.read_names])
            if after is not None:
                statement = statement.where(_beyond(source_key, after))
            rows = self.source_conn.execute(
                statement.order_by(*source_key).limit(self.verify.segment_rows)
            ).all()
            last = len(rows) < self.verify.segment_rows
            source = self._source_frame(rows)
            upto = None if last else tuple(rows[-1]._mapping[k] for k in self.key)
            upto_cached = None if last else source.select(self.key).row(-1)
            self._compare_segment(source, cache_key, after_cached, upto_cached)
            if upto is None:
                return
            after, after_cached = upto, upto_cached

    def _source_frame(self, rows: list[sa.Row[Any]]) -> pl.DataFrame:
        """Source rows as the cache should hold them."""
        frame = to_frame(rows, self.read_names, self.schema, table=self.source.table.name)
        self.schema = self.schema or dict(frame.schema)
        frame = self.source.transformed(frame).with_columns(canonical_uuids(self.source)).select(self.names)
        self.cache_schema = self.cache_schema or dict(frame.schema)
        return frame

    def _compare_segment(
        self,
        source: pl.DataFrame,
        cache_key: list[sa.ColumnElement[Any]],
        after: tuple[Any, ...] | None,
        upto: tuple[Any, ...] | None,
    ) -> None:
        """One key range: (after, upto], unbounded at the end so extra cache rows are found too."""
        self.segments += 1
        where = self.settled.cache_where(self.target)
        if after is not None:
            where.append(_beyond(cache_key, after))
        if upto is not None:
            where.append(sa.not_(_beyond(cache_key, upto)))
        limit = 2 * self.verify.segment_rows
        cache_rows = self.cache_conn.execute(
            sa.select(*[self.target.c[n] for n in self.names])
            .where(*where)
            .order_by(*cache_key)
            .limit(limit + 1)
        ).all()
        self.source_rows += source.height
        cache = self._cache_frame(cache_rows)
        if cache is None or cache.height > limit:
            # Too many rows to hold, or values that do not fit the source's types: report the
            # whole segment rather than bisect it.
            count = self.cache_conn.execute(
                sa.select(sa.func.count()).select_from(self.target).where(*where)
            ).scalar_one()
            self.cache_rows += count
            firsts = [tuple(row._mapping[k] for k in self.key) for row in cache_rows[:1]]
            firsts += [source.select(self.key).row(0)] if source.height else []
            first = _smallest(firsts) if firsts else after
            # The last segment is open-ended: None stands for "to the end".
            self.differences.append(_Difference(_shown(first), _shown(upto), source.height, count))
            return
        self.cache_rows += cache.height
        self._bisect(self._hashed(source), self._hashed(cache))

    def _cache_frame(self, rows: list[sa.Row[Any]]) -> pl.DataFrame | None:
        """Cache rows in the source's polars types, or None when they do not fit them."""
        assert self.cache_schema is not None
        try:
            frame = pl.DataFrame(rows, schema=self.names, orient="row", infer_schema_length=None)
            return frame.select(pl.col(name).cast(dtype) for name, dtype in self.cache_schema.items())
        except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError):
            return None

    def _hashed(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Key columns and one hash per row, in key order; decimals hashed as their exact text."""
        comparable = frame.with_columns(
            pl.col(n).cast(pl.String) for n, dtype in frame.schema.items() if isinstance(dtype, pl.Decimal)
        )
        return frame.select(self.key).with_columns(comparable.hash_rows().alias("_hash")).sort(self.key)

    def _bisect(self, source: pl.DataFrame, cache: pl.DataFrame) -> None:
        """Halve a differing key range by row position until it holds `bisect_to_rows` rows or fewer."""
        if source.height == cache.height and _digest(source) == _digest(cache):
            return
        larger = source if source.height >= cache.height else cache
        if larger.height <= self.verify.bisect_to_rows:
            self._record(source, cache)
            return
        split = larger.row(larger.height // 2 - 1, named=True)
        left = _at_or_before(self.key, [split[k] for k in self.key])
        self._bisect(source.filter(left), cache.filter(left))
        self._bisect(source.filter(~left), cache.filter(~left))

    def _record(self, source: pl.DataFrame, cache: pl.DataFrame) -> None:
        keys = pl.concat([source.select(self.key), cache.select(self.key)]).sort(self.key)
        self.differences.append(
            _Difference(_shown(keys.row(0)), _shown(keys.row(-1)), source.height, cache.height)
        )

    def result(self, table: TableSpec) -> dg.AssetCheckResult:
        reported = self.differences[:MAX_REPORTED_RANGES]
        where = self.settled.describe()
        metadata: dict[str, Any] = {
            "differing_ranges": len(self.differences),
            "segments": self.segments,
            "source_rows": self.source_rows,
            "cache_rows": self.cache_rows,
            "range": where,
        }
        if not self.differences:
            return dg.AssetCheckResult(
                passed=True,
                severity=WARN,
                metadata=metadata,
                description=f"table '{table.name}': {self.source_rows} rows with {where} are identical",
            )
        metadata["ranges"] = dg.MetadataValue.json([d.__dict__ for d in reported])
        more = len(self.differences) - len(reported)
        listing = "; ".join(d.describe() for d in reported) + (f"; and {more} more" if more else "")
        key = ", ".join(self.key)
        return dg.AssetCheckResult(
            passed=False,
            severity=WARN,
            metadata=metadata,
            description=(
                f"table '{table.name}': {len(self.differences)} key ranges of ({key}) differ between "
                f"source and cache, with {where}: {listing}"
            ),
        )


def _beyond(key: list[sa.ColumnElement[Any]], values: tuple[Any, ...]) -> sa.ColumnElement[bool]:
    """key > values, comparing a composite key as a row value."""
    if len(key) == 1:
        return key[0] > values[0]
    return sa.tuple_(*key) > sa.tuple_(*values)


def _at_or_before(key: list[str], values: list[Any]) -> pl.Expr:
    """key <= values in lexicographic order, as a polars predicate."""
    *head, tail = list(zip(key, values, strict=True))
    condition = pl.col(tail[0]) <= tail[1]
    for name, value in reversed(head):
        condition = (pl.col(name) < value) | ((pl.col(name) == value) & condition)
    return condition


def _smallest(keys: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    try:
        return min(keys)
    except TypeError:  # the two drivers returned different types for the key
        return keys[0]


def _shown(key: tuple[Any, ...] | None) -> Any:
    return None if key is None else shown_key(key)


def _digest(frame: pl.DataFrame) -> int:
    """The wrapping sum of the row hashes: order-independent, and cheap to compare."""
    return int(frame.get_column("_hash").sum())
