"""The file-drop source: CSV, Parquet and Excel files matching a glob in a folder.

A full load reads every matching file; an incremental reads the files that are new or whose
content changed (by SHA-256, so a file replaced in place with its old modification time, or a
late file with an old timestamp, is read all the same), found against a manifest in the cache
that the sync's own commit updates. Files are read in bounded batches: polars' streaming CSV
reader, pyarrow's Parquet row groups, openpyxl's read-only rows.

Column types come from the table's `schema:` where it names a column, else from the first batch
of the first file (integers, decimals as doubles, true/false, ISO timestamps and dates; a number
with a leading zero stays text, as codes do); then they are fixed, and a value that does not fit
fails the sync naming the file, the line and the column.
"""

from __future__ import annotations

import codecs
import hashlib
import shutil
import tempfile
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa

from sync_assets.catalog.files import FILE_COLUMN, MODIFIED_COLUMN, ROW_COLUMN
from sync_assets.catalog.models import TableSpec
from sync_assets.errors import DataError, SyncError, SyncTransientError
from sync_assets.sources.base import Log, Source, Window
from sync_assets.sources.folders import Folder, FolderMissing
from sync_assets.sources.manifest import Dropped, loaded_files, record_files
from sync_assets.types import MICROSECOND_DIGITS, ColumnType, Kind, from_polars, parse_type, polars_dtype

LINEAGE = {
    FILE_COLUMN: ColumnType(Kind.STRING),
    ROW_COLUMN: ColumnType(Kind.INTEGER, bits=64),
    MODIFIED_COLUMN: ColumnType(Kind.DATETIME, precision=MICROSECOND_DIGITS),
}
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType | None


class FilesSource(Source):
    """The files of one table in one folder, for one sync."""

    upper_bound_known = False

    def __init__(self, folder: Folder, table: TableSpec, *, batch_size: int, log: Log) -> None:
        self.folder, self.table, self.batch_size, self.log = folder, table, batch_size, log
        self.declared = {name: parse_type(text) for name, text in table.column_types.items()}
        self.fields: dict[str, ColumnType] | None = None  # fixed by the first batch read
        self.loaded: dict[str, str] = {}  # path -> sha256, as the manifest has them
        self.read: list[Dropped] = []  # the files this sync read, for the manifest

    @property
    def columns(self) -> Sequence[Column]:
        known = self.fields if self.fields is not None else {**self.declared, **LINEAGE}
        return [Column(n, t) for n, t in known.items()]

    @property
    def typed(self) -> bool:
        return self.fields is not None

    def column(self, name: str) -> Column:
        known = {**self.declared, **LINEAGE, **(self.fields or {})}
        return Column(name, known.get(name))

    def max_watermark(self) -> Any:
        return None  # an incremental reads the files the manifest has not seen, whatever their times

    def is_transient(self, error: BaseException) -> bool:
        return self.folder.is_transient(error)

    def adopt(self, types: dict[str, ColumnType]) -> None:
        self.declared = {**{k: v for k, v in types.items() if k not in LINEAGE}, **self.declared}

    def prepare(self, cache: sa.Connection) -> None:
        self.loaded = loaded_files(cache, self.table.name)

    def record(self, cache: sa.Connection, *, full: bool) -> None:
        record_files(cache, self.table.name, self.read, full=full)

    def settled(self, first: pl.DataFrame | None) -> FilesSource:
        if first is None and self.fields is None:
            msg = (
                f"table '{self.table.name}': no file matching '{self.table.files}' has rows, so the "
                "types of its columns are unknown and the target cannot be created"
            )
            raise DataError(msg, table=self.table.name)
        return self

    # -- which files --------------------------------------------------------------------------------
    def matching(self) -> list[Dropped]:
        """The files matching the glob, oldest first (a later file's version of a row wins)."""
        found = []
        try:
            for listed in self.folder.listing(str(self.table.files)):
                digest = _sha256(self.folder.fetch(listed.name))
                found.append(Dropped(listed.name, listed.size, listed.modified, digest))
        except OSError as err:
            raise self._folder_error(err) from None
        return sorted(found, key=lambda f: (f.modified, f.path))

    def batches(self, window: Window | None) -> Generator[pl.DataFrame]:
        files = self.matching()
        if window is not None:  # an incremental: what the manifest has not seen as it is now
            for unchanged in [f for f in files if self.loaded.get(f.path) == f.sha256]:
                self.folder.release(unchanged.path)
            files = [f for f in files if self.loaded.get(f.path) != f.sha256]
        self.log(f"{self.table.name}: {len(files)} file(s) to read")
        for dropped in files:
            self.read.append(dropped)
            yield from self._file(dropped)
            self.folder.release(dropped.path)

    def _folder_error(self, err: OSError) -> SyncError:
        """The folder cannot be listed or a file fetched: named, transient if the connection is."""
        text = str(err).strip() or type(err).__name__
        where = "" if isinstance(err, FolderMissing) else f"{self.folder.describe()}: "
        msg = f"table '{self.table.name}': {where}{text}"
        kind = SyncTransientError if self.folder.is_transient(err) else SyncError
        return kind(msg, table=self.table.name)

    # -- reading ------------------------------------------------------------------------------------
    def _file(self, dropped: Dropped) -> Iterator[pl.DataFrame]:
        path = self.folder.fetch(dropped.path)
        fmt = self.table.file_format
        try:
            if fmt == "csv":
                raw = self._csv(path)
                options = self.table.csv
                header = 1 if options is None or options.has_header else 0
                first_line = (options.skip_rows if options else 0) + header + 1
            elif fmt == "parquet":
                raw, first_line = _parquet(path, self.batch_size), 1
            else:
                raw = self._xlsx(path)
                first_line = (self.table.xlsx.skip_rows if self.table.xlsx else 0) + 2
            offset = 0
            for frame in raw:
                yield self._conform(frame, dropped, offset, first_line)
                offset += frame.height
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, ValueError) as err:
            if isinstance(err, DataError):
                raise
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            msg = f"table '{self.table.name}': file {dropped.path} cannot be read as {fmt}: {text}"
            raise DataError(msg, table=self.table.name) from None

    def _csv(self, path: Path) -> Iterator[pl.DataFrame]:
        options = self.table.csv
        encoding = codecs.lookup(options.encoding if options else "utf-8").name
        with tempfile.TemporaryDirectory() as tmp:
            if encoding != "utf-8":  # polars reads UTF-8 only: re-encode, streaming, to a temp file
                utf8 = Path(tmp) / "utf8.csv"
                with (
                    path.open("r", encoding=encoding, newline="") as src,
                    utf8.open("w", encoding="utf-8", newline="") as dst,
                ):
                    shutil.copyfileobj(src, dst, _HASH_CHUNK)
                path = utf8
            scan = pl.scan_csv(
                path,
                has_header=options.has_header if options else True,
                separator=options.separator if options else ",",
                quote_char=options.quote_char if options else '"',
                skip_rows=options.skip_rows if options else 0,
                null_values=options.null_values if options else [""],
                infer_schema=False,  # every value as text: the types are ours to settle and check
                raise_if_empty=False,
            )
            yield from scan.collect_batches(chunk_size=self.batch_size)

    def _xlsx(self, path: Path) -> Iterator[pl.DataFrame]:
        import openpyxl

        options = self.table.xlsx
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            sheet = book[options.sheet] if options and options.sheet else book.worksheets[0]
            rows = sheet.iter_rows(values_only=True)
            for _ in range(options.skip_rows if options else 0):
                next(rows, None)
            header = [str(h) if h is not None else f"column_{i}" for i, h in enumerate(next(rows, ()))]
            batch: list[list[str | None]] = []
            for row in rows:
                batch.append([_cell_text(v) for v in row[: len(header)]] + [None] * (len(header) - len(row)))
                if len(batch) >= self.batch_size:
                    yield pl.DataFrame(batch, schema=dict.fromkeys(header, pl.String), orient="row")
                    batch = []
            if batch:
                yield pl.DataFrame(batch, schema=dict.fromkeys(header, pl.String), orient="row")
        finally:
            book.close()

    # -- types ----------------------------------------------------------------------------------------
    def _conform(self, frame: pl.DataFrame, dropped: Dropped, offset: int, first_line: int) -> pl.DataFrame:
        """The batch renamed, with its lineage columns, in the fixed types; or an error naming the
        file, the line and the column of the first value that does not fit."""
        frame = frame.rename({k: v for k, v in self.table.columns.items() if k in frame.columns})
        if self.fields is None:
            self.fields = self._fix(frame)
        unknown = [c for c in frame.columns if c not in self.fields]
        if unknown:
            msg = (
                f"table '{self.table.name}': file {dropped.path}: column '{unknown[0]}' is not in the "
                f"columns the first file fixed ({', '.join(c for c in self.fields if c not in LINEAGE)})"
            )
            raise DataError(msg, table=self.table.name)
        frame = frame.with_columns(
            pl.lit(dropped.path).alias(FILE_COLUMN),
            pl.int_range(offset + 1, offset + frame.height + 1, dtype=pl.Int64).alias(ROW_COLUMN),
            pl.lit(dropped.modified).cast(pl.Datetime("us")).alias(MODIFIED_COLUMN),
        )
        out = []
        for name, ct in self.fields.items():
            if name not in frame.columns:
                out.append(pl.lit(None, dtype=polars_dtype(ct)).alias(name))
                continue
            converted = _convert(frame.get_column(name), ct)
            bad = frame.get_column(name).is_not_null() & converted.is_null()
            if bad.any():
                index = int(bad.arg_true()[0])
                value = frame.get_column(name)[index]
                line = first_line + offset + index
                where = f"line {line}" if self.table.file_format != "parquet" else f"row {offset + index + 1}"
                msg = (
                    f"table '{self.table.name}': file {dropped.path}, {where}, column '{name}': "
                    f"{str(value)[:80]!r} is not {ct.describe()}"
                )
                raise DataError(msg, table=self.table.name)
            out.append(converted.alias(name))
        return pl.DataFrame(out)

    def _fix(self, frame: pl.DataFrame) -> dict[str, ColumnType]:
        fields: dict[str, ColumnType] = {}
        for name in frame.columns:
            series = frame.get_column(name)
            if name in self.declared:
                fields[name] = self.declared[name]
            elif series.dtype == pl.String:
                fields[name] = infer(series)
            else:
                fields[name] = from_polars(series.dtype, table=self.table.name, column=name)
        for name, ct in self.declared.items():
            fields.setdefault(name, ct)
        return {**fields, **{k: v for k, v in LINEAGE.items() if k not in fields}}


def infer(series: pl.Series) -> ColumnType:
    """The neutral type of a text column from its values in the first batch."""
    values = series.drop_nulls()
    if values.len() == 0:
        return ColumnType(Kind.STRING)
    padded = values.str.contains(r"^[+-]?0\d").any()  # 007: a code, whose zeros a number would lose
    if not padded and values.cast(pl.Int64, strict=False).null_count() == 0:
        return ColumnType(Kind.INTEGER, bits=64)
    if not padded and values.cast(pl.Float64, strict=False).null_count() == 0:
        return ColumnType(Kind.FLOAT)
    if values.str.to_lowercase().is_in(["true", "false"]).all():
        return ColumnType(Kind.BOOLEAN)
    for kind in (Kind.DATETIME, Kind.DATE):
        parsed = _parse_time(values, ColumnType(kind, precision=MICROSECOND_DIGITS))
        if parsed is not None and parsed.null_count() == 0:
            zoned = isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone is not None
            return ColumnType(
                kind, precision=MICROSECOND_DIGITS if kind is Kind.DATETIME else None, timezone=zoned
            )
    return ColumnType(Kind.STRING)


def _convert(series: pl.Series, ct: ColumnType) -> pl.Series:
    """`series` in the batch dtype of `ct`; values that do not fit become null (the caller names them)."""
    dtype = polars_dtype(ct)
    if series.dtype != pl.String:
        return series.cast(dtype, strict=False)
    if ct.kind is Kind.BOOLEAN:
        lowered = series.str.strip_chars().str.to_lowercase()
        return lowered.replace_strict({"true": True, "false": False}, default=None, return_dtype=pl.Boolean)
    if ct.kind in (Kind.DATETIME, Kind.DATE):
        parsed = _parse_time(series, ct)
        return parsed if parsed is not None else pl.Series(series.name, [None] * len(series), dtype=dtype)
    if ct.kind is Kind.STRING:
        if ct.length is not None:
            return series.set(series.str.len_chars() > ct.length, None)
        return series
    if ct.kind is Kind.DECIMAL:
        return _decimal(series, ct)
    return series.str.strip_chars().cast(dtype, strict=False)


def _decimal(series: pl.Series, ct: ColumnType) -> pl.Series:
    """Exact decimals: a value with more fractional digits than the scale is refused, not rounded."""
    text = series.str.strip_chars()
    scale = ct.scale or 0
    fraction = text.str.extract(r"\.(\d*)$").str.len_chars().fill_null(0)
    converted = text.cast(polars_dtype(ct), strict=False)
    return converted.set(fraction > scale, None)


def _parse_time(series: pl.Series, ct: ColumnType) -> pl.Series | None:
    try:
        if ct.kind is Kind.DATE:
            return series.str.strip_chars().str.to_date(strict=False)
        parsed = series.str.strip_chars().str.to_datetime(time_unit="us", strict=False)
    except pl.exceptions.PolarsError:  # no one format fits the values
        return None
    if isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone is not None and not ct.timezone:
        return parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)  # naive means UTC
    if ct.timezone and isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone is None:
        return parsed.dt.replace_time_zone("UTC")
    return parsed


def _parquet(path: Path, batch_size: int) -> Iterator[pl.DataFrame]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        for batch in parquet.iter_batches(batch_size=batch_size):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield frame


def _cell_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
