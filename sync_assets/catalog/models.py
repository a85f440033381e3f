"""Pydantic models of the table catalog, validated once when definitions load."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PositiveInt,
    Tag,
    field_validator,
    model_validator,
)

from sync_assets.catalog import placeholders
from sync_assets.catalog.changes import HASH_COLUMN, ChangeDetection, Deletes
from sync_assets.catalog.durations import Duration
from sync_assets.catalog.files import (
    FILE_COLUMN,
    FORMATS,
    MODIFIED_COLUMN,
    ROW_COLUMN,
    CsvOptions,
    FilesConnectionSpec,
    XlsxOptions,
)
from sync_assets.catalog.jde import JdeOptions
from sync_assets.catalog.operations import (
    Alerts,
    Freshness,
    Retries,
    Schedule,
    ScheduleValue,
    ValidationRule,
    Verification,
)
from sync_assets.catalog.rest import Incremental, Pagination, RestConnectionSpec
from sync_assets.dialects.base import source_only
from sync_assets.types import parse_type

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
# A schedule's sync is late after this many of its intervals without a success, stale after that.
WARN_INTERVALS, FAIL_INTERVALS = 1.5, 3
SYNC_LOG_TABLE = "sync_log"
SYNC_FILES_TABLE = "sync_files"  # the manifest of file-drop tables (sources/manifest.py)
# Resource keys sync_assets itself (or Dagster) uses besides the connections.
RESERVED_RESOURCE_KEYS = frozenset({"sync_alerter", "io_manager"})
# Checks every table gets besides its validation rules.
RESERVED_CHECK_NAMES = frozenset(
    {"reconciliation", "deep_reconciliation", "source_lag", "mass_fresh", "daily_fresh", "hourly_fresh"}
)
# A remote ERP over a WAN: a login that has not answered in 30 s will not; a probe every minute
# notices a dead server or a dropped NAT entry long before the OS default of two hours.
DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=30)
DEFAULT_KEEPALIVE = timedelta(seconds=60)


class UpdateType(StrEnum):
    """The partitions of every table asset."""

    MASS = "mass"
    DAILY = "daily"
    HOURLY = "hourly"

    @property
    def interval(self) -> timedelta:
        """How often this update type is meant to run; the default lookback is a multiple of it."""
        return {"mass": timedelta(days=7), "daily": timedelta(days=1), "hourly": timedelta(hours=1)}[
            self.value
        ]

    @property
    def is_incremental(self) -> bool:
        return self is not UpdateType.MASS


Identifier = Annotated[str, Field(pattern=IDENTIFIER, max_length=63)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ConnectionSpec(_Strict):
    """A database; `url` and `password` may hold ${VAR} placeholders, resolved when a sync runs."""

    type: Literal["sql"] = Field(default="sql", description="a database (the default kind of connection)")
    url: str = Field(min_length=1, description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db")
    password: str | None = Field(default=None, description="usually ${VAR}; kept out of the URL")
    demo: bool = Field(default=False, description="create this SQLite file with the demo data if missing")
    max_parallel: PositiveInt | None = Field(default=None, description="tables of this source synced at once")
    retries: Retries = Field(
        default_factory=Retries, description="Dagster's retries of a sync after a transient error"
    )
    connect_timeout: Duration = Field(
        default=DEFAULT_CONNECT_TIMEOUT,
        description="opening a connection (TCP and login) gives up after this",
    )
    keepalive: Duration = Field(
        default=DEFAULT_KEEPALIVE, description="an idle connection is probed after this (TCP keep-alive)"
    )
    arrow_odbc: bool = Field(
        default=False,
        description="read through arrow-odbc's Arrow batches (SQL Server and SAP ASE over pyodbc)",
    )

    @model_validator(mode="after")
    def _arrow_odbc_needs_pyodbc(self) -> ConnectionSpec:
        if self.arrow_odbc:
            from sync_assets.dialects.odbc_reader import refusal

            try:
                url = sa.make_url(placeholders.substitute(self.url, "SYNCVAR"))
            except sa.exc.ArgumentError:
                return self  # the scheme comes from the environment: checked when connecting
            if "SYNCVAR" not in url.drivername and (why := refusal(url)):
                raise ValueError(why)
        return self

    def database(self) -> str | None:
        """The kind of database the URL names (SQLAlchemy's dialect name); None while a
        placeholder stands for the scheme."""
        try:
            return sa.make_url(placeholders.substitute(self.url, "SYNCVAR")).get_backend_name()
        except sa.exc.ArgumentError:
            return None

    @field_validator("connect_timeout", "keepalive")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            msg = "must be at least 1s"
            raise ValueError(msg)
        return value

    @field_validator("url")
    @classmethod
    def _no_literal_password(cls, url: str) -> str:
        shape = placeholders.substitute(url, "SYNCVAR")
        try:
            parsed = sa.make_url(shape)
        except sa.exc.ArgumentError:
            if placeholders.has_placeholders(url):
                return url  # the whole URL (or its scheme) comes from the environment
            msg = "not a valid SQLAlchemy URL (expected e.g. postgresql+psycopg://user@host/db)"
            raise ValueError(msg) from None
        if parsed.password and "SYNCVAR" not in str(parsed.password):
            msg = "the URL holds a literal password; use ${VAR} or the `password:` key instead"
            raise ValueError(msg)
        return url

    @field_validator("password")
    @classmethod
    def _password_from_environment(cls, password: str | None) -> str | None:
        if password is not None and not placeholders.has_placeholders(password):
            msg = "a password must come from the environment: write ${VAR}"
            raise ValueError(msg)
        return password


class Defaults(_Strict):
    """Catalog-wide settings each table may override."""

    batch_size: PositiveInt = Field(
        default=50_000, description="rows per polars batch; memory is bounded by this"
    )
    lookback_multiplier: float = Field(
        default=2.0, ge=0, description="default lookback = this x the interval (daily 1 d, hourly 1 h)"
    )
    sync_log_retention_days: PositiveInt = Field(
        default=90, description="sync_log rows older than this are purged"
    )
    schedules: dict[UpdateType, ScheduleValue] = Field(
        default_factory=dict, description="a cron per update type; none: no schedule"
    )
    timezone: str = Field(default="UTC", description="time zone of schedules that name none")
    freshness: Freshness | None = Field(
        default=None, description="Dagster FreshnessPolicy of every table; none: no policy"
    )
    max_lag: Duration | None = Field(
        default=None, description="source vs cache watermark lag that fails `source_lag`"
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, timezone: str) -> str:
        return Schedule(cron="0 0 * * *", timezone=timezone).timezone or timezone


class Execution(_Strict):
    """How a run executes its table syncs."""

    single_table_in_process: bool = Field(
        default=True,
        description=(
            "a run of one table syncs in the run's own process, without starting a step process "
            "(seconds per run); a crash of that process then fails the run instead of retrying the step"
        ),
    )


class TableSpec(_Strict):
    """One cached table: where it comes from, its key and its watermark."""

    name: Identifier = Field(description="the asset's name, [<source>, <name>], group <source>")
    source: Identifier = Field(description="the connection read from")
    source_table: str | None = Field(default=None, description="the table (or view) read; or `query`")
    source_schema: str | None = Field(default=None, description="the schema of `source_table`")
    query: str | None = Field(default=None, description="a SELECT read instead of a table")
    target_table: Identifier | None = Field(default=None, description="the cache table; default: `name`")
    primary_key: list[Identifier] = Field(min_length=1, description="cache column names")
    updated_at: Identifier | None = Field(
        default=None, description="the watermark column (cache name); none: a mass-only table"
    )
    columns: dict[str, Identifier] = Field(
        default_factory=dict,
        description="source -> cache name; or source -> {name, description} (name default: the source's)",
    )
    column_descriptions: dict[str, str] = Field(
        default_factory=dict,
        description="cache column -> what it holds, shown in the UI's Columns table (also from `columns`)",
    )
    batch_size: PositiveInt | None = Field(default=None, description="rows per batch; default: `defaults`")
    lookback: dict[UpdateType, Duration] = Field(
        default_factory=dict, description="per daily/hourly, how far before the watermark to re-read"
    )
    lookback_multiplier: float | None = Field(
        default=None, ge=0, description="overrides the `defaults` multiplier"
    )
    description: str | None = Field(default=None, description="shown in the UI")
    schedules: dict[UpdateType, ScheduleValue] = Field(
        default_factory=dict, description="this table's crons; else the `defaults` schedules"
    )
    freshness: Freshness | None = Field(
        default=None, description="Dagster FreshnessPolicy; else the `defaults` one"
    )
    max_lag: Duration | None = Field(default=None, description="data lag (source vs cache) that fails")
    deps: list[Identifier] = Field(default_factory=list, description="tables synced before this one")
    post_sql: list[str] = Field(default_factory=list, description="run in the cache after a sync; {table}")
    checks: list[ValidationRule] = Field(
        default_factory=list, description="validation rules run on the cache table after each sync"
    )
    verify: Verification = Field(
        default_factory=Verification, description="source/cache comparison after each sync"
    )
    direct_copy: bool = Field(
        default=True, description="let two databases of the same kind copy rows server to server"
    )
    arrow_read: bool = Field(
        default=True, description="read through the driver's Arrow batches where it has them"
    )
    allow_lossy: list[str] = Field(
        default_factory=list,
        description="cache columns (or '*') whose type the cache cannot hold exactly, accepted knowingly",
    )
    jde: JdeOptions | None = Field(
        default=None, description="JDE Julian dates, HHMMSS times, implied decimals and padded text"
    )
    # A REST source's table reads an endpoint instead of a table or a query.
    endpoint: str | None = Field(default=None, description="path under the connection's base_url")
    records: str | None = Field(
        default=None, description="where the list is in a response (a path); none: the body"
    )
    paginate: Pagination = Field(default_factory=Pagination, description="how the endpoint pages")
    incremental: Incremental | None = Field(
        default=None, description="the query parameter daily/hourly send the watermark in"
    )
    column_types: dict[str, str] = Field(
        default_factory=dict, alias="schema", description="neutral types by cache column, e.g. decimal(12,2)"
    )
    # A file-drop source's table reads the files that match a glob.
    files: str | None = Field(
        default=None, description="a glob under the connection's folder, e.g. orders_*.csv"
    )
    format: Literal["csv", "parquet", "xlsx"] | None = Field(
        default=None, description="else from the extension"
    )
    csv: CsvOptions | None = Field(default=None, description="CSV reader options")
    xlsx: XlsxOptions | None = Field(default=None, description="Excel reader options")
    # Change detection beyond the watermark (SQL sources).
    change_detection: ChangeDetection = Field(
        default=ChangeDetection.TIMESTAMP,
        description="timestamp: rows past the watermark; hash: rows whose hash changed, by key range",
    )
    deletes: Deletes | None = Field(
        default=None, description="catch rows deleted at the source: delete or stamp them"
    )

    @model_validator(mode="before")
    @classmethod
    def _described_columns(cls, data: Any) -> Any:
        """`columns: {WADOCO: {name: order_number, description: ...}}` is a rename plus a
        description: split into `columns` and `column_descriptions`."""
        if not isinstance(data, dict) or not isinstance(columns := data.get("columns"), dict):
            return data
        if not any(isinstance(v, dict) for v in columns.values()):
            return data
        renames, described = {}, dict(data.get("column_descriptions") or {})
        for source, value in columns.items():
            if not isinstance(value, dict):
                renames[source] = value
                continue
            if unknown := sorted(set(value) - {"name", "description"}):
                msg = f"column '{source}': unknown key '{unknown[0]}' (a column takes name and description)"
                raise ValueError(msg)
            renames[source] = value.get("name", source)
            if value.get("description") is not None:
                described[renames[source]] = value["description"]
        return {**data, "columns": renames, "column_descriptions": described}

    @model_validator(mode="before")
    @classmethod
    def _file_defaults(cls, data: Any) -> Any:
        """A files table without a key is keyed by file and row; without `updated_at`, the file's
        modification time orders versions of a row (the later file's wins)."""
        if not isinstance(data, dict) or data.get("files") is None:
            return data
        defaults = {"updated_at": MODIFIED_COLUMN, "primary_key": [FILE_COLUMN, ROW_COLUMN]}
        return {**data, **{k: v for k, v in defaults.items() if not data.get(k)}}

    @model_validator(mode="after")
    def _one_source(self) -> TableSpec:
        if [self.source_table, self.query, self.endpoint, self.files].count(None) != 3:
            msg = "give exactly one of `source_table`, `query`, `endpoint` or `files`"
            raise ValueError(msg)
        if self.files is None and (
            given := [k for k in ("format", "csv", "xlsx") if getattr(self, k) is not None]
        ):
            msg = f"`{given[0]}` applies to a `files` table"
            raise ValueError(msg)
        if self.files is not None and self.file_format is None:
            msg = f"`format` is needed: '{self.files}' does not end in .{', .'.join(FORMATS)}"
            raise ValueError(msg)
        if self.endpoint is None:
            rest = [k for k in ("records", "incremental") if getattr(self, k) is not None]
            rest += [k for k in ("paginate",) if k in self.model_fields_set]
            if rest:
                msg = f"`{rest[0]}` applies to a REST `endpoint` table"
                raise ValueError(msg)
        if "column_types" in self.model_fields_set and self.endpoint is None and self.files is None:
            msg = "`schema` applies to a REST `endpoint` or a `files` table (a database says its types)"
            raise ValueError(msg)
        if self.jde is not None and (self.endpoint or self.files):
            msg = "`jde` applies to SQL source tables"
            raise ValueError(msg)
        if self.incremental is not None and self.updated_at is None:
            msg = "`incremental` needs `updated_at`: the field whose newest value the next sync sends"
            raise ValueError(msg)
        for column, type_name in self.column_types.items():
            try:
                parse_type(type_name)
            except ValueError as err:
                msg = f"`schema` column '{column}': {err}"
                raise ValueError(msg) from None
        if self.query is not None and self.source_schema is not None:
            msg = "`source_schema` applies to `source_table`, not to `query`"
            raise ValueError(msg)
        if UpdateType.MASS in self.lookback:
            msg = "`lookback` applies to daily and hourly only"
            raise ValueError(msg)
        if not self.is_incremental and set(self.schedules) - {UpdateType.MASS}:
            msg = "a table without `updated_at` (or `change_detection: hash`) can only be scheduled for mass"
            raise ValueError(msg)
        self._check_change_detection()
        names = [c.check_name for c in self.checks]
        if reserved := sorted(set(names) & RESERVED_CHECK_NAMES):
            msg = f"check name '{reserved[0]}' is built in; give the rule another `name`"
            raise ValueError(msg)
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            msg = f"two checks are named '{dup}'; give one a `name`"
            raise ValueError(msg)
        if len(set(self.primary_key)) != len(self.primary_key):
            msg = "`primary_key` names a column twice"
            raise ValueError(msg)
        targets = list(self.columns.values())
        if len(set(targets)) != len(targets):
            msg = "`columns` renames two source columns to the same name"
            raise ValueError(msg)
        if self.jde is not None:
            self._check_jde(self.jde)
        return self

    def _check_change_detection(self) -> None:
        by_key_range = self.change_detection is ChangeDetection.HASH or self.deletes is not None
        if by_key_range and (self.endpoint is not None or self.files is not None):
            what = (
                "`change_detection: hash`" if self.change_detection is ChangeDetection.HASH else "`deletes`"
            )
            msg = f"{what} applies to SQL source tables (it compares key ranges in the source database)"
            raise ValueError(msg)
        if by_key_range and self.jde is not None:
            # Key ranges are cut at cache values and compared in the source: a key the `jde`
            # transform changes (a Julian date, an implied decimal) has other values there.
            converted = {*self.jde.julian_dates, *self.jde.implied_decimals}
            cached = {self.columns.get(n, n).lower(): n for n in converted}
            if clash := [k for k in self.primary_key if k.lower() in cached]:
                msg = (
                    f"`primary_key` column '{clash[0]}' is converted by `jde` (from "
                    f"'{cached[clash[0].lower()]}'), so its key ranges cannot be compared with the "
                    "source; `deletes` and `change_detection: hash` need keys the source holds as cached"
                )
                raise ValueError(msg)
        soft = self.deletes.soft_column if self.deletes else None
        if soft is not None and (soft in self.primary_key or soft == self.updated_at):
            msg = f"`deletes.column` '{soft}' is a key or the watermark; it must be a column of its own"
            raise ValueError(msg)
        reserved = {HASH_COLUMN} & {*self.columns.values(), *([soft] if soft else [])}
        if reserved:
            msg = f"'{HASH_COLUMN}' holds the row hashes of `change_detection: hash`; rename the column"
            raise ValueError(msg)

    def _check_jde(self, jde: JdeOptions) -> None:
        if clash := sorted(set(jde.times) & set(self.columns.values())):
            msg = f"`jde.times` column '{clash[0]}' is also the target of a `columns` rename"
            raise ValueError(msg)
        renamed = {self.columns.get(n, n): n for n in jde.implied_decimals}
        if self.updated_at in renamed:
            msg = f"`updated_at` column '{self.updated_at}' is an implied decimal; a watermark must be a time"
            raise ValueError(msg)
        if key := sorted(set(jde.times) & set(self.primary_key)):
            msg = f"`primary_key` column '{key[0]}' is computed by `jde.times`; use source columns"
            raise ValueError(msg)

    @property
    def target(self) -> str:
        return self.target_table or self.name

    @property
    def file_format(self) -> str | None:
        """A files table's format: `format`, else the glob's extension."""
        if self.format is not None or self.files is None:
            return self.format
        extension = self.files.rsplit(".", 1)[-1].lower() if "." in self.files else ""
        return extension if extension in FORMATS else None

    @property
    def is_incremental(self) -> bool:
        """Whether daily and hourly can read increments: by watermark, or by row hashes."""
        return self.updated_at is not None or self.change_detection is ChangeDetection.HASH

    @property
    def by_hash(self) -> bool:
        return self.change_detection is ChangeDetection.HASH

    @property
    def change_columns(self) -> list[str]:
        """The cache columns change detection keeps (row hashes, the soft-delete stamp): added to
        a target that predates them."""
        soft = self.deletes.soft_column if self.deletes else None
        return [*([HASH_COLUMN] if self.by_hash else []), *([soft] if soft else [])]

    @property
    def update_types(self) -> list[UpdateType]:
        """Mass always; daily and hourly only where increments can be found."""
        return list(UpdateType) if self.is_incremental else [UpdateType.MASS]

    def schedules_for(self, defaults: Defaults) -> dict[UpdateType, Schedule]:
        """The table's own schedules, else the catalog defaults it supports (mass only without updated_at)."""
        chosen = self.schedules or {u: s for u, s in defaults.schedules.items() if u in self.update_types}
        return {
            u: s if s.timezone else s.model_copy(update={"timezone": defaults.timezone})
            for u, s in chosen.items()
        }

    def freshness_for(self, defaults: Defaults) -> Freshness | None:
        """Explicit windows, else derived from the fastest schedule as the staleness checks derive
        theirs (the `source_lag` check fails past the fail window when `max_lag` is not set)."""
        if self.freshness or defaults.freshness:
            return self.freshness or defaults.freshness
        schedules = self.schedules_for(defaults)
        if not schedules:
            return None
        fastest = min(s.interval() for s in schedules.values())
        return Freshness(warn_after=fastest * WARN_INTERVALS, fail_after=fastest * FAIL_INTERVALS)

    def lookback_for(self, update_type: UpdateType, defaults: Defaults) -> timedelta:
        if update_type in self.lookback:
            return self.lookback[update_type]
        multiplier = (
            defaults.lookback_multiplier if self.lookback_multiplier is None else self.lookback_multiplier
        )
        return update_type.interval * multiplier


CONNECTION_KINDS = ("sql", "rest", "files")


def _connection_type(value: Any) -> str:
    return value.get("type", "sql") if isinstance(value, dict) else getattr(value, "type", "sql")


AnyConnection = Annotated[
    Annotated[ConnectionSpec, Tag("sql")]
    | Annotated[RestConnectionSpec, Tag("rest")]
    | Annotated[FilesConnectionSpec, Tag("files")],
    Discriminator(
        _connection_type,
        custom_error_type="connection_type",
        custom_error_message="`type` is sql (a database: the default), rest (a JSON API) or files (a folder)",
    ),
]


class Catalog(_Strict):
    """The whole catalog: connections, which one is the cache, and the tables."""

    connections: dict[Identifier, AnyConnection] = Field(
        min_length=1, description="databases, APIs and folders by name; `type` tells which"
    )
    cache: Identifier = Field(description="which connection is the cache (a database)")
    defaults: Defaults = Field(default_factory=Defaults, description="settings each table may override")
    alerts: Alerts = Field(default_factory=Alerts, description="where alerts go besides the Dagster log")
    execution: Execution = Field(default_factory=Execution, description="how runs execute their syncs")
    tables: list[TableSpec] = Field(
        default_factory=list,
        description="may be empty: a catalog starts with connections; `sync-assets add-table` adds tables",
    )

    @field_validator("tables", mode="before")
    @classmethod
    def _no_tables_yet(cls, value: Any) -> Any:
        """`tables:` with nothing under it (YAML null) is a catalog without tables yet."""
        return [] if value is None else value

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Cross-references pydantic cannot see, as (location, message) pairs."""
        found: list[tuple[tuple[str | int, ...], str]] = []
        for name in self.connections.keys() & RESERVED_RESOURCE_KEYS:
            found.append((("connections", name), f"'{name}' is reserved; name the connection differently"))
        if self.cache not in self.connections:
            found.append((("cache",), f"unknown connection '{self.cache}' (known: {self._known()})"))
        elif isinstance(cache := self.connections[self.cache], RestConnectionSpec | FilesConnectionSpec):
            kind = "a REST API" if isinstance(cache, RestConnectionSpec) else "a folder of files"
            found.append((("cache",), f"connection '{self.cache}' is {kind}; the cache is a database"))
        elif (database := cache.database()) and (why := source_only(database)):
            found.append((("connections", self.cache, "url"), why))
        names: dict[str, int] = {}
        targets: dict[str, int] = {}
        for i, table in enumerate(self.tables):
            if table.source not in self.connections:
                msg = f"unknown connection '{table.source}' (known: {self._known()})"
                found.append((("tables", i, "source"), msg))
            elif table.source == self.cache:
                found.append((("tables", i, "source"), "a table cannot use the cache as its source"))
            elif problem := self._source_kind_problem(table):
                found.append((("tables", i, problem[0]), problem[1]))
            if table.name in names:
                msg = f"duplicate table name '{table.name}' (first at tables[{names[table.name]}])"
                found.append((("tables", i, "name"), msg))
            names.setdefault(table.name, i)
            if table.target.lower() in (SYNC_LOG_TABLE, SYNC_FILES_TABLE):
                what = "the audit table" if table.target.lower() == SYNC_LOG_TABLE else "the file manifest"
                found.append((("tables", i, "target_table"), f"'{table.target.lower()}' is {what}"))
            if table.target.lower() in targets:
                first = targets[table.target.lower()]
                msg = f"target table '{table.target}' is already written by tables[{first}]"
                found.append((("tables", i, "target_table"), msg))
            targets.setdefault(table.target.lower(), i)
        for i, table in enumerate(self.tables):
            for j, dep in enumerate(table.deps):
                if dep not in names:
                    found.append((("tables", i, "deps", j), f"unknown table '{dep}'"))
                elif dep == table.name:
                    found.append((("tables", i, "deps", j), "a table cannot depend on itself"))
        return found

    def _known(self) -> str:
        return ", ".join(sorted(self.connections))

    def _source_kind_problem(self, table: TableSpec) -> tuple[str, str] | None:
        """Where a table and its connection disagree on the kind of source, as (key, message)."""
        kinds = {
            RestConnectionSpec: ("a REST API", "endpoint"),
            FilesConnectionSpec: ("a folder of files", "files"),
        }
        connection = self.connections[table.source]
        wanted = next((key for key in ("endpoint", "files") if getattr(table, key) is not None), None)
        kind, needs = kinds.get(type(connection), ("a database", None))
        if wanted == needs:
            return None
        if needs is not None:
            return "source", f"connection '{table.source}' is {kind}: give the table `{needs}`"
        needed = "files" if wanted == "files" else "rest"
        return str(wanted), f"`{wanted}` needs a {needed} connection; '{table.source}' is {kind}"

    def table(self, name: str) -> TableSpec:
        return next(t for t in self.tables if t.name == name)

    def batch_size(self, table: TableSpec) -> int:
        return table.batch_size or self.defaults.batch_size
