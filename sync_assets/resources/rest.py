"""A REST catalog connection as a Dagster ConfigurableResource.

Like `SqlDatabase`, its config holds the catalog's templates only (${VAR} placeholders, never a
resolved token), so the UI shows variable names; values are read when a sync opens the source.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import httpx
from pydantic import Field

from sync_assets.catalog import placeholders
from sync_assets.catalog.models import TableSpec
from sync_assets.catalog.rest import RestConnectionSpec
from sync_assets.errors import SyncError
from sync_assets.sources.base import Log
from sync_assets.sources.http import HttpClient, connection_secrets
from sync_assets.sources.rest import RestSource


class RestApi(dg.ConfigurableResource):
    """A JSON API source, read page by page."""

    name: str = Field(description="the connection's name in the catalog")
    connection: str = Field(description="the catalog's connection, as JSON with its ${VAR} templates")

    def spec(self) -> RestConnectionSpec:
        return RestConnectionSpec.model_validate_json(self.connection)

    def base_url(self, *, table: str | None = None) -> str:
        """The base URL for messages: resolved, without user info or query."""
        template = self.spec().base_url
        try:
            url = httpx.URL(placeholders.resolve(template, connection=self.name, table=table))
        except (SyncError, httpx.InvalidURL):
            return template if placeholders.has_placeholders(template) else "the configured URL"
        return str(url.copy_with(userinfo=b"", query=None))

    def secrets(self, *, table: str | None = None) -> list[str]:
        """The resolved auth values (tokens, keys, passwords) and headers from the environment."""
        try:
            return connection_secrets(self.name, self.spec(), table=table)
        except SyncError:  # an unset ${VAR}: nothing resolved, nothing to mask
            return []

    def describe(self, role: str, *, table: str | None = None) -> str:
        return f"{role} connection '{self.name}' ({self.base_url(table=table)})"

    @contextmanager
    def open_source(self, table: TableSpec, *, batch_size: int, log: Log) -> Iterator[RestSource]:
        client = HttpClient(self.name, self.spec(), table=table.name, log=log)
        try:
            yield RestSource(client, table, batch_size=batch_size, log=log)
        finally:
            client.close()
