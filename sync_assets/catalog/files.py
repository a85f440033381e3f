"""Catalog models of a file-drop source: a folder of CSV, Parquet or Excel files, and how a table
reads the files that match its glob."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, model_validator

from sync_assets.catalog import placeholders
from sync_assets.catalog.operations import Retries

# Columns every file-drop table gets: where each row came from, and the file's modification time
# (the default `updated_at`: of two versions of a row, the later file's wins).
FILE_COLUMN, ROW_COLUMN, MODIFIED_COLUMN = "_file", "_row", "_file_modified"
FORMATS = ("csv", "parquet", "xlsx")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Storage options that are secrets: they must come from the environment (${VAR}).
SECRET_OPTION = re.compile(r"(?i)(password|passphrase|secret|token|key)")


class FilesConnectionSpec(_Strict):
    """A folder files are dropped into: a local `path`, or an fsspec `url` (sftp://, s3://, with the
    `remote` extra) and its `storage_options`; each may hold ${VAR} placeholders."""

    type: Literal["files"] = Field(description="a folder of files")
    path: str | None = Field(
        default=None, min_length=1, description="a local folder; globs of its tables are relative to it"
    )
    url: str | None = Field(
        default=None, min_length=1, description="a remote folder, e.g. sftp://host/exports"
    )
    storage_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="options of the fsspec filesystem (secrets as ${VAR})"
    )
    max_parallel: PositiveInt | None = Field(default=None, description="tables of this source synced at once")
    retries: Retries = Field(
        default_factory=lambda: Retries(max_retries=0), description="Dagster's retries of the sync"
    )
    demo: Literal[False] = Field(default=False, description="SQL connections only")

    @model_validator(mode="after")
    def _one_folder(self) -> FilesConnectionSpec:
        if (self.path is None) == (self.url is None):
            msg = "give exactly one of `path` (a local folder) or `url` (a remote one, e.g. sftp://host/dir)"
            raise ValueError(msg)
        if self.storage_options and self.url is None:
            msg = "`storage_options` apply to a remote `url`"
            raise ValueError(msg)
        if self.url is not None and urlsplit(placeholders.substitute(self.url, "SYNCVAR")).password not in (
            None,
            "SYNCVAR",
        ):
            msg = "the URL holds a literal password; put it in `storage_options` as ${VAR}"
            raise ValueError(msg)
        for name, value in self.storage_options.items():
            if SECRET_OPTION.search(name) and not (
                isinstance(value, str) and placeholders.has_placeholders(value)
            ):
                msg = f"storage option '{name}' is a secret: give it as ${{VAR}}, read from the environment"
                raise ValueError(msg)
        return self


class CsvOptions(_Strict):
    """How a table's CSV files are read."""

    separator: str = Field(default=",", min_length=1, max_length=1, description="the field separator")
    quote_char: str | None = Field(default='"', max_length=1, description="the quote character; null: none")
    encoding: str = Field(default="utf-8", description="any Python codec, e.g. latin-1, cp1252")
    has_header: bool = Field(default=True, description="the first line names the columns")
    skip_rows: NonNegativeInt = Field(default=0, description="lines before the header")
    null_values: list[str] = Field(default_factory=lambda: [""], description="values read as NULL")


class XlsxOptions(_Strict):
    """How a table's Excel files are read."""

    sheet: str | None = Field(default=None, description="the sheet's name; the first sheet if not given")
    skip_rows: NonNegativeInt = Field(default=0, description="rows before the header")
