"""Catalog models of a file-drop source: a folder of CSV, Parquet or Excel files, and how a table
reads the files that match its glob."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from sync_assets.catalog.operations import Retries

# Columns every file-drop table gets: where each row came from, and the file's modification time
# (the default `updated_at`: of two versions of a row, the later file's wins).
FILE_COLUMN, ROW_COLUMN, MODIFIED_COLUMN = "_file", "_row", "_file_modified"
FORMATS = ("csv", "parquet", "xlsx")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilesConnectionSpec(_Strict):
    """A local folder files are dropped into; `path` may hold ${VAR} placeholders."""

    type: Literal["files"]
    path: str = Field(min_length=1, description="the folder; globs of its tables are relative to it")
    max_parallel: PositiveInt | None = Field(default=None, description="tables of this source synced at once")
    retries: Retries = Field(default_factory=lambda: Retries(max_retries=0))
    demo: Literal[False] = False


class CsvOptions(_Strict):
    separator: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str | None = Field(default='"', max_length=1)
    encoding: str = Field(default="utf-8", description="any Python codec, e.g. latin-1, cp1252")
    has_header: bool = True
    skip_rows: NonNegativeInt = Field(default=0, description="lines before the header")
    null_values: list[str] = Field(default_factory=lambda: [""])


class XlsxOptions(_Strict):
    sheet: str | None = Field(default=None, description="the sheet's name; the first sheet if not given")
    skip_rows: NonNegativeInt = Field(default=0, description="rows before the header")
