"""A file-drop catalog connection as a Dagster ConfigurableResource: the folder's template only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from sync_assets.catalog import placeholders
from sync_assets.catalog.models import TableSpec
from sync_assets.errors import SyncError
from sync_assets.sources.base import Log
from sync_assets.sources.files import FilesSource


class FileDrop(dg.ConfigurableResource):
    """A folder that CSV, Parquet or Excel files are dropped into."""

    name: str = Field(description="the connection's name in the catalog")
    path: str = Field(description="the folder; ${VAR} placeholders are read from the environment at run time")

    def folder(self, *, table: str | None = None) -> Path:
        return Path(placeholders.resolve(self.path, connection=self.name, table=table)).expanduser()

    def secrets(self, *, table: str | None = None) -> list[str]:
        return []  # a folder's path is no secret

    def describe(self, role: str, *, table: str | None = None) -> str:
        try:
            shown = str(self.folder(table=table))
        except SyncError:
            shown = self.path
        return f"{role} connection '{self.name}' (folder {shown})"

    @contextmanager
    def open_source(self, table: TableSpec, *, batch_size: int, log: Log) -> Iterator[FilesSource]:
        yield FilesSource(self.folder(table=table.name), table, batch_size=batch_size, log=log)
