"""A file-drop catalog connection as a Dagster ConfigurableResource: the folder's templates only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field

from sync_assets.catalog import placeholders
from sync_assets.catalog.files import SECRET_OPTION
from sync_assets.catalog.models import TableSpec
from sync_assets.errors import SyncError, SyncTransientError
from sync_assets.sources.base import Log
from sync_assets.sources.files import FilesSource
from sync_assets.sources.folders import Folder, LocalFolder, RemoteFolder, is_transient, shown_url


class FileDrop(dg.ConfigurableResource):
    """A folder that CSV, Parquet or Excel files are dropped into: local, or behind an fsspec URL."""

    name: str = Field(description="the connection's name in the catalog")
    path: str | None = Field(
        default=None,
        description="a local folder; ${VAR} placeholders are read from the environment at run time",
    )
    url: str | None = Field(default=None, description="a remote folder (fsspec URL), as a template")
    storage_options: str = Field(default="{}", description="the fsspec options as JSON, secrets as ${VAR}")

    def _options(self, *, table: str | None) -> dict[str, Any]:
        return {
            name: placeholders.resolve(value, connection=self.name, table=table)
            if isinstance(value, str)
            else value
            for name, value in json.loads(self.storage_options).items()
        }

    def _url(self, *, table: str | None) -> str:
        assert self.url is not None
        return placeholders.resolve(self.url, connection=self.name, table=table)

    def folder(self, *, table: str | None = None) -> Folder:
        if self.url is None:
            assert self.path is not None
            return LocalFolder(
                Path(placeholders.resolve(self.path, connection=self.name, table=table)).expanduser()
            )
        url = self._url(table=table)
        try:
            return RemoteFolder(url, self._options(table=table))
        except ImportError as err:
            msg = (
                f"table '{table}': connection '{self.name}' reads {shown_url(url)}, which needs the "
                f"`remote` extra (pip install 'sync-assets[remote]'): {err}"
            )
            raise SyncError(msg, table=table) from None
        except Exception as err:  # the backend's own: login refused, host unknown, bucket missing
            text = str(err).strip() or type(err).__name__
            msg = f"table '{table}': connection '{self.name}', folder {shown_url(url)}: {text}"
            kind = SyncTransientError if is_transient(err) else SyncError
            raise kind(msg, table=table) from None

    def secrets(self, *, table: str | None = None) -> list[str]:
        """The secret storage options (and a password in the URL): masked in every message."""
        if self.url is None:
            return []  # a local folder's path is no secret
        try:
            options = self._options(table=table)
            found = [str(v) for k, v in options.items() if SECRET_OPTION.search(k) and v]
            password = urlsplit(self._url(table=table)).password
        except SyncError:
            return []
        return found + ([password] if password else [])

    def describe(self, role: str, *, table: str | None = None) -> str:
        if self.url is not None:
            try:
                shown = shown_url(self._url(table=table))
            except SyncError:
                shown = self.url
            return f"{role} connection '{self.name}' (folder {shown})"
        assert self.path is not None
        try:
            local = str(Path(placeholders.resolve(self.path, connection=self.name, table=table)).expanduser())
        except SyncError:
            local = self.path
        return f"{role} connection '{self.name}' (folder {local})"

    @contextmanager
    def open_source(self, table: TableSpec, *, batch_size: int, log: Log) -> Iterator[FilesSource]:
        folder = self.folder(table=table.name)
        try:
            yield FilesSource(folder, table, batch_size=batch_size, log=log)
        finally:
            folder.close()
