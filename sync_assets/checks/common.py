"""What the checks of one table share: connections, the cache table, the last sync, the settled range."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa

from sync_assets.catalog.models import SYNC_LOG_TABLE, Catalog, TableSpec, UpdateType
from sync_assets.dialects import CacheDialect, SourceDialect
from sync_assets.dialects.base import DATABASE_ERRORS
from sync_assets.errors import SyncError, describe_error
from sync_assets.redact import redact
from sync_assets.resources.database import Engines, Role, SqlDatabase
from sync_assets.sources.sql import SqlTable, reflect
from sync_assets.sync import audit, watermark
from sync_assets.sync.audit import INCREMENTAL
from sync_assets.sync.target import existing_target

SAMPLE_SIZE = 5  # offending keys or rows shown as evidence


@dataclass(frozen=True)
class CheckResources:
    """The connection resources a check evaluation reads from."""

    source: SqlDatabase  # the table's source connection
    cache: SqlDatabase  # the catalog's cache connection
    shared: SharedConnections | None = None  # open across the checks of one op: `sharing`


class SharedConnections:
    """Connections opened at the first check that needs each and kept for the next ones: the
    checks after a sync log in to the source once, not once per check."""

    def __init__(self, engines: Engines | None = None) -> None:
        self._stack = ExitStack()
        self._engines = engines if engines is not None else self._stack.enter_context(Engines())
        self._opened: dict[str, tuple[sa.Connection, Any]] = {}
        self.reflected: dict[tuple[str, str], Any] = {}

    def get(self, database: SqlDatabase, role: Role, table: str) -> tuple[sa.Connection, Any]:
        if role not in self._opened:
            engine, dialect = self._stack.enter_context(
                self._engines.engine(database, role=role, table=table)
            )
            self._opened[role] = (self._stack.enter_context(engine.connect()), dialect)
        return self._opened[role]

    def settle(self) -> None:
        """End each connection's read transaction, so the next check sees the data as it is then
        (and a failed statement leaves nothing aborted); a connection that cannot is dropped."""
        for role, (conn, _) in list(self._opened.items()):
            try:
                conn.rollback()
            except DATABASE_ERRORS:
                del self._opened[role]

    def close(self) -> None:
        self._opened.clear()
        self._stack.close()


@contextmanager
def sharing(
    resources: CheckResources, *, source_table: SqlTable | None = None, engines: Engines | None = None
) -> Iterator[CheckResources]:
    """`resources` whose checks share their connections until the block ends. After a sync in the
    same op: `engines`, the sync's, whose pooled connections spare the checks a login, and
    `source_table`, the source as the sync reflected it (on an ERP's catalog views, seconds)."""
    shared = SharedConnections(engines)
    if source_table is not None:
        shared.reflected[("source", source_table.table.name)] = source_table
    try:
        yield replace(resources, shared=shared)
    finally:
        shared.close()


@dataclass(frozen=True)
class TableCheck:
    """One check of a table: its spec, to declare on the table's asset op, and how to evaluate it.

    `evaluate` returns a result naming its check and asset, so the op can yield it as it is; a
    check that cannot run (a database error) raises `dg.Failure` instead.
    """

    spec: dg.AssetCheckSpec
    evaluate: Callable[[CheckResources], dg.AssetCheckResult]


def table_check(
    name: str,
    asset_key: dg.AssetKey,
    evaluate: Callable[[CheckResources], dg.AssetCheckResult],
    *,
    description: str,
    blocking: bool = False,
) -> TableCheck:
    """A TableCheck whose results carry its check name and asset key, whatever `evaluate` set."""
    spec = dg.AssetCheckSpec(name, asset=asset_key, description=description, blocking=blocking)

    def _evaluate(resources: CheckResources) -> dg.AssetCheckResult:
        found = evaluate(resources)
        return dg.AssetCheckResult(
            passed=found.passed,
            asset_key=asset_key,
            check_name=name,
            severity=found.severity,
            metadata=found.metadata,
            description=found.description,
        )

    return TableCheck(spec, _evaluate)


@dataclass(frozen=True)
class Connections:
    """The connections of one check evaluation; `source` is None unless the check asked for it.
    `reflected` holds the tables reflected on them, shared by the checks that share them."""

    cache: sa.Connection
    cache_dialect: CacheDialect
    source: sa.Connection | None = None
    source_dialect: SourceDialect | None = None
    reflected: dict[tuple[str, str], Any] = field(default_factory=dict)

    def target(self, table: TableSpec) -> sa.Table | None:
        """The table's cache table as it is now, or None before its first sync."""
        key = ("cache", table.name)
        if key not in self.reflected:
            self.reflected[key] = cache_table(self.cache, table)
        return self.reflected[key]  # type: ignore[no-any-return]

    def source_table(self, table: TableSpec) -> SqlTable:
        """The table as the source describes it (reflected once for the checks that share it)."""
        key = ("source", table.name)
        if key not in self.reflected:
            conn, dialect = self.require_source()
            self.reflected[key] = reflect(conn, table, dialect)
        return self.reflected[key]  # type: ignore[no-any-return]

    def require_source(self) -> tuple[sa.Connection, SourceDialect]:
        assert self.source is not None and self.source_dialect is not None, "opened without source"
        return self.source, self.source_dialect


@contextmanager
def connect(resources: CheckResources, table: TableSpec, *, source: bool) -> Iterator[Connections]:
    """Open the cache (and the source) for one check; both are closed, never committed, afterwards.

    A database error ends the check as a Failure naming the table, with secrets masked, the way a
    sync reports it: a check that cannot run is not a check that failed.
    """
    cache_db = resources.cache
    source_db = resources.source if source else None
    secrets = cache_db.secrets(table=table.name) + (source_db.secrets(table=table.name) if source_db else [])
    try:
        if resources.shared is not None:
            shared = resources.shared
            try:
                opened = Connections(*shared.get(cache_db, "cache", table.name), reflected=shared.reflected)
                if source_db is not None:
                    source_conn, source_dialect = shared.get(source_db, "source", table.name)
                    opened = replace(opened, source=source_conn, source_dialect=source_dialect)
                yield opened
            finally:
                shared.settle()
            return
        with ExitStack() as stack:
            cache_engine, cache_dialect = stack.enter_context(cache_db.engine(role="cache", table=table.name))
            opened = Connections(stack.enter_context(cache_engine.connect()), cache_dialect)
            if source_db is not None:
                engine, dialect = stack.enter_context(source_db.engine(role="source", table=table.name))
                opened = Connections(
                    opened.cache, cache_dialect, stack.enter_context(engine.connect()), dialect
                )
            yield opened
    except (SyncError, *DATABASE_ERRORS) as err:
        text = redact(describe_error(err, phase=None), secrets)
        prefix = "" if isinstance(err, SyncError) else f"table '{table.name}': "
        raise dg.Failure(description=f"{prefix}{text}", allow_retries=False) from None


def cache_table(conn: sa.Connection, table: TableSpec) -> sa.Table | None:
    """The table's cache table as it is now (reflected), or None before its first sync."""
    return existing_target(conn, table.target)


def not_synced(table: TableSpec) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"cache_table": table.target},
        description=f"table '{table.name}': not synced yet (no successful sync into {table.target})",
    )


def missing_columns(
    table: TableSpec, target: sa.Table, names: list[str], *, severity: dg.AssetCheckSeverity, what: str
) -> dg.AssetCheckResult | None:
    """A failed result naming the first absent column, or None when the cache table has them all."""
    absent = [n for n in names if n not in target.c]
    if not absent:
        return None
    available = ", ".join(target.c.keys())
    return dg.AssetCheckResult(
        passed=False,
        severity=severity,
        metadata={"cache_table": table.target, "missing_columns": absent},
        description=(
            f"table '{table.name}': column '{absent[0]}' {what} is not in cache table {table.target} "
            f"(its columns: {available})"
        ),
    )


@dataclass(frozen=True)
class LastSync:
    """The latest succeeded sync_log row of a table: what the cache is known to hold."""

    mode: str | None
    watermark_from: str | None
    watermark_to: str | None


def last_sync(conn: sa.Connection, table: TableSpec) -> LastSync | None:
    if not sa.inspect(conn).has_table(SYNC_LOG_TABLE):
        return None
    log = audit.sync_log
    row = conn.execute(
        sa.select(log.c.mode, log.c.watermark_from, log.c.watermark_to)
        .where(log.c.table_name == table.name, log.c.status == audit.SUCCEEDED)
        .order_by(log.c.id.desc())
        .limit(1)
    ).first()
    return LastSync(row.mode, row.watermark_from, row.watermark_to) if row else None


@dataclass(frozen=True)
class SettledRange:
    """Rows with low <= updated_at < high: loaded by the last sync and older than the lookback window.

    Newer rows may still be on their way, so leaving them out keeps a busy source from raising false
    alarms. The upper bound is exclusive on both sides: a SQLite cache stores time zone-aware
    timestamps as text with an offset, which an inclusive bound would miss by a suffix.
    """

    column: str | None = None
    low: Any = None
    high: Any = None
    soft_deleted: str | None = None  # the cache's soft-delete stamp: stamped rows are not the source's

    def describe(self) -> str:
        if self.column is None:
            return "all rows"
        low = "-inf" if self.low is None else str(self.low)
        high = "+inf" if self.high is None else str(self.high)
        return f"{self.column} in [{low}, {high})"

    def source_select(self, source: SqlTable) -> sa.Select[Any]:
        """The source's settled rows, every column under its cache name."""
        return source.select(low=self.low, below=self.high)

    def cache_where(self, target: sa.Table) -> list[sa.ColumnElement[bool]]:
        """The same range on the cache table."""
        conditions = [] if self.soft_deleted is None else [target.c[self.soft_deleted].is_(None)]
        if self.column is None:
            return conditions
        column = target.c[self.column]
        if self.low is not None:
            conditions.append(column >= _cache_value(self.low))
        if self.high is not None:
            conditions.append(column < _cache_value(self.high))
        return conditions


def settled_range(
    catalog: Catalog, table: TableSpec, *, source: SqlTable, source_conn: sa.Connection, last: LastSync
) -> SettledRange:
    """[watermark_from, watermark_to - lookback) after an incremental, (-inf, ...) after a full load.

    A mass-only table, or one whose last load found no rows, is compared as a whole; so is the
    start of a table whose syncs delete what the source no longer has (`deletes`).
    """
    soft = table.deletes.soft_column if table.deletes else None
    if table.updated_at is None or last.watermark_to is None:
        return SettledRange(soft_deleted=soft)
    column_type = source.column(table.updated_at).type
    # A query source has no declared types: its watermark takes the type of a value it holds.
    like = None if column_type else source.read_max_watermark(source_conn)
    newest = watermark.decode(last.watermark_to, column_type, like=like)
    cutoff = watermark.lower_bound(newest, table.lookback_for(UpdateType.HOURLY, catalog.defaults))
    low = None
    if last.mode == INCREMENTAL and table.deletes is None:
        low = watermark.decode(last.watermark_from, column_type, like=like)
    return SettledRange(table.updated_at, low, cutoff, soft)


def _cache_value(value: Any) -> Any:
    """Aware timestamps as UTC: the SQLite cache binds the clock fields and stores them in UTC."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def shown(value: Any) -> Any:
    """A value as metadata can hold it (JSON): numbers and text as they are, the rest as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    return str(value)


def shown_key(values: tuple[Any, ...] | list[Any]) -> Any:
    """One key: its value for a one-column key, a list for a composite one."""
    return shown(values[0]) if len(values) == 1 else [shown(v) for v in values]
