"""A catalog connection as a Dagster ConfigurableResource.

The resource config holds only the URL template (with ${VAR} placeholders), never a resolved
secret, so the UI shows variable names; values are read when a sync opens the connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

import dagster as dg
import sqlalchemy as sa
from pydantic import Field

from sync_assets.catalog import placeholders
from sync_assets.catalog.models import DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE
from sync_assets.dialects import get_dialect, odbc_reader
from sync_assets.dialects.base import Timeouts, source_only
from sync_assets.errors import SyncError

Role = Literal["source", "cache"]


class SqlDatabase(dg.ConfigurableResource):
    """A source or cache database reached through SQLAlchemy."""

    name: str = Field(description="the connection's name in the catalog")
    url: str = Field(
        description="SQLAlchemy URL; ${VAR} placeholders are read from the environment at run time"
    )
    password: str | None = Field(default=None, description="${VAR} holding the password, if any")
    demo: bool = Field(default=False, description="create the demo source data on first use")
    connect_timeout: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT.total_seconds(), description="seconds a connection may take to open"
    )
    keepalive: float = Field(
        default=DEFAULT_KEEPALIVE.total_seconds(), description="seconds before an idle connection is probed"
    )
    arrow_odbc: bool = Field(default=False, description="read through arrow-odbc (pyodbc sources)")

    def resolved_url(self, *, table: str | None = None) -> sa.URL:
        """The URL with placeholders filled in; the caller must not log it unmasked."""
        text = placeholders.resolve(self.url, connection=self.name, table=table)
        try:
            url = sa.make_url(text)
        except sa.exc.ArgumentError:
            shown = self.url if placeholders.has_placeholders(self.url) else "(the configured URL)"
            msg = f"connection '{self.name}': {shown} does not resolve to a valid SQLAlchemy URL"
            raise SyncError(msg, table=table) from None
        if self.password is not None:
            url = url.set(password=placeholders.resolve(self.password, connection=self.name, table=table))
        return url

    def secrets(self, *, table: str | None = None) -> list[str]:
        """Values that must never appear in a message: the password, wherever it came from."""
        try:
            password = self.resolved_url(table=table).password
        except SyncError:
            return []
        return [str(password)] if password else []

    def display_url(self, *, table: str | None = None) -> str:
        """Driver, user, host, port and database: never the password nor the query, where drivers
        take further secrets (`odbc_connect=...PWD=...`, `sslpassword`)."""
        return self.resolved_url(table=table).set(query={}).render_as_string(hide_password=True)

    def describe(self, role: Role, *, table: str | None = None) -> str:
        """How messages name this connection: "source connection 'jde' (postgresql://alice@host/erp)"."""
        try:
            shown = self.display_url(table=table)
        except SyncError:
            # An unset ${VAR}: the template, which holds no secret; a literal URL is not shown.
            shown = self.url if placeholders.has_placeholders(self.url) else "the configured URL"
        return f"{role} connection '{self.name}' ({shown})"

    @contextmanager
    def engine(self, *, role: Role, table: str | None = None) -> Iterator[tuple[sa.Engine, Any]]:
        """An engine for one sync, disposed afterwards; the caller owns its connections.

        With it the database's dialect: a `CacheDialect` for the cache (a source-only database is
        refused here), a `SourceDialect` for a source.
        """
        url = self.resolved_url(table=table)
        dialect = get_dialect(url.get_backend_name())
        if role == "cache" and (why := source_only(url.get_backend_name())):
            raise SyncError(why, table=table)
        if self.demo and role == "source":
            from sync_assets.demo.generator import ensure_demo_source

            ensure_demo_source(url)
        timeouts = Timeouts(connect=self.connect_timeout, keepalive=self.keepalive)
        options = dialect.engine_options(url, role=role, timeouts=timeouts)
        if self.arrow_odbc and role == "source":
            if why := odbc_reader.refusal(url) or odbc_reader.missing_package():
                msg = f"connection '{self.name}': {why}"
                raise SyncError(msg, table=table)
            reading = odbc_reader.reading(timeouts.connect, options.get("connect_args", {}))
            options["execution_options"] = {
                **options.get("execution_options", {}),
                odbc_reader.OPTION: reading,
            }
        engine = sa.create_engine(url, **options)
        dialect.prepare_engine(engine, role=role)
        try:
            yield engine, dialect
        finally:
            engine.dispose()


class Engines:
    """The engines of one asset op, each made at its first use and disposed when the op ends: the
    sync and the checks after it share each database's pooled connection, so the op logs in to a
    database once (on an ERP, the login is the slow part of a check)."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._made: dict[tuple[str, Role, str | None], tuple[sa.Engine, Any]] = {}

    @contextmanager
    def engine(
        self, database: SqlDatabase, *, role: Role, table: str | None = None
    ) -> Iterator[tuple[sa.Engine, Any]]:
        """`database.engine()`, kept until `close()` instead of disposed at the block's end."""
        key = (database.name, role, table)
        if key not in self._made:
            self._made[key] = self._stack.enter_context(database.engine(role=role, table=table))
        yield self._made[key]

    def close(self) -> None:
        self._made.clear()
        self._stack.close()

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
