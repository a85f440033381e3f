"""The REST source: a JSON endpoint read page by page into bounded polars batches.

Column types come from the table's `schema:` where it names a column, else from the values of the
first page (JSON integers -> bigint, other numbers -> double, booleans, ISO 8601 strings ->
timestamp or date, other strings -> text; nested objects and arrays -> JSON text). Then they are
fixed: a later record that does not fit fails the sync, naming the field and the record's key,
before anything is written. An API gives no upper bound for an incremental: the newest watermark
loaded becomes the next sync's start.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import polars as pl

from sync_assets.catalog.models import TableSpec
from sync_assets.errors import DataError
from sync_assets.sources.base import Log, Source, Window
from sync_assets.sources.http import HttpClient, find, with_params
from sync_assets.types import MICROSECOND_DIGITS, ColumnType, Kind, parse_type, polars_dtype

DATETIME = ColumnType(Kind.DATETIME, precision=MICROSECOND_DIGITS)


@dataclass(frozen=True)
class Field:
    """A cache column and where its value is in a record (a dotted path for a nested field)."""

    name: str
    path: str
    type: ColumnType | None


class RestSource(Source):
    """One endpoint of a REST connection, for one sync."""

    upper_bound_known = False
    _known_paths: frozenset[str] = frozenset()
    _readers: list[tuple[str, str, bool, Callable[[Any], Any]]] = []  # set by _fix
    _key_positions: list[tuple[str, int]] = []

    def __init__(self, client: HttpClient, table: TableSpec, *, batch_size: int, log: Log) -> None:
        self.client, self.table, self.batch_size, self.log = client, table, batch_size, log
        declared = {name: parse_type(text) for name, text in table.column_types.items()}
        if table.updated_at is not None:
            declared.setdefault(table.updated_at, DATETIME)  # what `incremental` sends, as ISO 8601
        self.declared = declared
        self.fields: list[Field] = [Field(n, _path_of(table, n), t) for n, t in declared.items()]
        self.fixed = False  # the fields are those of the first page from now on

    @property
    def columns(self) -> Sequence[Field]:
        return self.fields

    @property
    def typed(self) -> bool:
        return self.fixed

    @staticmethod
    def declared_column(table: TableSpec, name: str) -> Field:
        """A column as the catalog types it, before any record is read (the watermark's, for a reset)."""
        declared = table.column_types.get(name)
        fallback = DATETIME if name == table.updated_at else None
        return Field(name, _path_of(table, name), parse_type(declared) if declared else fallback)

    def column(self, name: str) -> Field:
        found = next((f for f in self.fields if f.name == name), None)
        return found or self.declared_column(self.table, name)

    def adopt(self, types: dict[str, ColumnType]) -> None:
        self.declared = {**types, **self.declared}
        known = {f.name for f in self.fields}
        self.fields += [Field(n, _path_of(self.table, n), t) for n, t in types.items() if n not in known]

    def max_watermark(self) -> Any:
        return None  # an API does not say before it is read; the rows read do

    def is_transient(self, error: BaseException) -> bool:
        return False  # requests were already retried as the connection says

    def settled(self, first: pl.DataFrame | None) -> RestSource:
        """Fixed by the first page already (`batches` reads it); no page with records: no types."""
        if first is None and not self.fixed:
            msg = (
                f"table '{self.table.name}': the endpoint returned no records, so the types of its "
                "fields are unknown and the target cannot be created; name them in `schema:`"
            )
            raise DataError(msg, table=self.table.name)
        return self

    def batches(self, window: Window | None) -> Generator[pl.DataFrame]:
        """Pages of records, gathered into frames of at most `batch_size` rows."""
        params: dict[str, Any] = {}
        incremental = self.table.incremental
        if window is not None and window.low is not None and incremental is not None:
            params[incremental.param] = _wire(window.low, incremental.format)
        rows: list[list[Any]] = []  # in the order of `fields`
        for number, records in enumerate(self._pages(params), start=1):
            if not self.fixed:
                self._fix(records)
            for index, record in enumerate(records):
                rows.append(self._row(record, number, index))
                if len(rows) >= self.batch_size:
                    yield self._frame(rows)
                    rows = []
        if rows:
            yield self._frame(rows)

    def reported_total(self) -> int:
        """The record count the endpoint reports at `paginate.total_path`, in its first page."""
        path = self.table.paginate.total_path
        assert path is not None and self.table.endpoint is not None
        url = self.client.url(self.table.endpoint)
        body, response = self.client.get_json(url, self._first_query({}))
        total = _optional(body, path)
        if isinstance(total, bool) or not isinstance(total, int):
            shown = self.client.shown(response.url)
            msg = f"table '{self.table.name}': the response of {shown} has no record count at `{path}`"
            raise DataError(msg, table=self.table.name)
        return total

    # -- pages ------------------------------------------------------------------------------------
    def _pages(self, params: dict[str, Any]) -> Iterator[list[Any]]:
        table = self.table
        assert table.endpoint is not None
        url: str | None = self.client.url(table.endpoint)
        query = self._first_query(params)
        asked: set[str] = set()
        while url is not None:
            page = str(with_params(url, query))
            if page in asked:  # an API whose next page is one it already sent would never end
                msg = f"table '{table.name}': the API sent {self.client.shown(page)} again as the next page"
                raise DataError(msg, table=table.name)
            asked.add(page)
            body, response = self.client.get_json(url, query)
            records = self._records(body, response)
            yield records
            url, query = self._next(url, query, body, response, records)

    def _first_query(self, params: dict[str, Any]) -> dict[str, Any]:
        paging = self.table.paginate
        if paging.style == "offset":
            return params | {paging.offset_param: 0, paging.limit_param: paging.page_size}
        if paging.style == "page":
            return params | {paging.page_param: paging.first_page, paging.limit_param: paging.page_size}
        return dict(params)

    def _next(
        self, url: str, query: dict[str, Any], body: Any, response: httpx.Response, records: list[Any]
    ) -> tuple[str | None, dict[str, Any]]:
        """The next page's URL and query; no URL after the last page."""
        paging = self.table.paginate
        match paging.style:
            case "offset":
                if len(records) < paging.page_size:
                    return None, query
                return url, query | {paging.offset_param: query[paging.offset_param] + len(records)}
            case "page":
                if len(records) < paging.page_size:
                    return None, query
                return url, query | {paging.page_param: query[paging.page_param] + 1}
            case "cursor":
                cursor = _optional(body, paging.cursor_path)
                if not records or cursor in (None, ""):
                    return None, query
                return url, query | {paging.cursor_param: cursor}
            case "link":
                link = _optional(body, paging.next_path) if paging.next_path else None
                if paging.next_path is None:
                    link = response.links.get("next", {}).get("url")
                if not records or not link:
                    return None, query
                # The next link carries the query (filters included) itself.
                return self.client.url(str(httpx.URL(str(response.url)).join(str(link)))), {}
        return None, query

    def _records(self, body: Any, response: httpx.Response) -> list[Any]:
        path = self.table.records
        try:
            records = find(body, path)
        except (KeyError, IndexError, TypeError):
            shown = self.client.shown(response.url)
            msg = f"table '{self.table.name}': the response of {shown} has no `{path}` (the `records` path)"
            raise DataError(msg, table=self.table.name) from None
        if not isinstance(records, list):
            shown = self.client.shown(response.url)
            what = f"`{path}`" if path else "the body"
            kind = type(records).__name__
            msg = f"table '{self.table.name}': {what} of {shown} is {kind}, not a list of records"
            raise DataError(msg, table=self.table.name)
        return records

    # -- records -> rows ------------------------------------------------------------------------
    def _fix(self, records: list[Any]) -> None:
        """The fields and types, from `schema:` and the first page (an empty page fixes nothing)."""
        if not records:
            return
        renames = self.table.columns  # source field (or path) -> cache name
        by_name = {f.name: f for f in self.fields}
        seen: dict[str, list[Any]] = {}
        for record in records:
            if isinstance(record, dict):
                for key, value in record.items():
                    seen.setdefault(key, []).append(value)
        for key, values in seen.items():
            name = renames.get(key, key)
            if name not in by_name:
                by_name[name] = Field(name, key, infer(values))
        for path, name in renames.items():
            if "." in path and name not in by_name:
                values = [_optional(r, path) for r in records]
                by_name[name] = Field(name, path, infer(values))
        fields = [f if f.type is not None else Field(f.name, f.path, infer([])) for f in by_name.values()]
        self.fields, self.fixed = fields, True
        self._known_paths = frozenset(f.path.split(".")[0] for f in fields)
        self._readers = [(f.name, f.path, "." in f.path, converter(f.type)) for f in fields]  # type: ignore[arg-type]
        names = [f.name for f in fields]
        self._key_positions = [(k, names.index(k)) for k in self.table.primary_key if k in names]
        missing = [k for k in self.table.primary_key if k not in by_name]
        if missing:
            msg = f"table '{self.table.name}': primary key field '{missing[0]}' is not in the records"
            raise DataError(msg, table=self.table.name)

    def _row(self, record: Any, page: int, index: int) -> list[Any]:
        if not isinstance(record, dict):
            kind = type(record).__name__
            msg = f"table '{self.table.name}': record {index + 1} of page {page} is {kind}, not an object"
            raise DataError(msg, table=self.table.name)
        if not record.keys() <= self._known_paths:
            unknown = sorted(record.keys() - self._known_paths)
            msg = (
                f"table '{self.table.name}': record {self._key(record, page, index)}: "
                f"field '{unknown[0]}' was "
                "not in the first page, whose fields fixed the table's columns; name it in `schema:`"
            )
            raise DataError(msg, table=self.table.name)
        row: list[Any] = []
        for name, path, nested, convert in self._readers:
            value = _optional(record, path) if nested else record.get(path)
            if value is None:
                row.append(None)
                continue
            try:
                row.append(convert(value))
            except (TypeError, ValueError, ArithmeticError):
                field = next(f for f in self.fields if f.name == name)
                msg = (
                    f"table '{self.table.name}': record {self._key(record, page, index)}: "
                    f"field '{path}': "
                    f"{repr(value)[:80]} is not {field.type.describe()}, the type "  # type: ignore[union-attr]
                    f"{'`schema:` gives it' if name in self.declared else 'the first page showed'}"
                )
                raise DataError(msg, table=self.table.name) from None
        for key, position in self._key_positions:
            if row[position] is None:
                msg = (
                    f"table '{self.table.name}': record {index + 1} of page {page} has no primary key '{key}'"
                )
                raise DataError(msg, table=self.table.name)
        return row

    def _key(self, record: dict[str, Any], page: int, index: int) -> str:
        values = [f"{k}={_optional(record, _path_of(self.table, k))!r}" for k in self.table.primary_key]
        return f"{', '.join(values)} (page {page}, record {index + 1})"

    def _frame(self, rows: list[list[Any]]) -> pl.DataFrame:
        schema = {f.name: polars_dtype(f.type) for f in self.fields}  # type: ignore[arg-type]
        columns = zip(*rows, strict=True) if rows else ([] for _ in schema)
        return pl.DataFrame(dict(zip(schema, columns, strict=True)), schema=schema)


def _path_of(table: TableSpec, name: str) -> str:
    """The record field a cache column comes from (renames are source -> cache)."""
    return next((path for path, target in table.columns.items() if target == name), name)


def infer(values: list[Any]) -> ColumnType:
    """The neutral type of a field from its values on the first page."""
    present = [v for v in values if v is not None]
    if not present:
        return ColumnType(Kind.STRING)
    if all(isinstance(v, bool) for v in present):
        return ColumnType(Kind.BOOLEAN)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return ColumnType(Kind.INTEGER, bits=64)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return ColumnType(Kind.FLOAT)
    if all(isinstance(v, str) for v in present):
        parsed = [_iso(v) for v in present]
        if all(isinstance(p, datetime) for p in parsed):
            zoned = {p.tzinfo is not None for p in parsed}  # type: ignore[union-attr]
            if len(zoned) == 1:
                return ColumnType(Kind.DATETIME, precision=MICROSECOND_DIGITS, timezone=zoned.pop())
        if all(type(p) is date for p in parsed):
            return ColumnType(Kind.DATE)
    return ColumnType(Kind.STRING)


def converter(ct: ColumnType) -> Callable[[Any], Any]:
    """How a JSON value (never None) becomes what the batch holds for `ct`; the function raises
    ValueError or TypeError for a value that does not fit. Built once per column, used per value."""
    match ct.kind:
        case Kind.STRING | Kind.UUID:
            text_only, length = ct.kind is Kind.UUID, ct.length

            def text(value: Any) -> str:
                if type(value) is not str:
                    if isinstance(value, dict | list):
                        value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
                    elif isinstance(value, bool | int | float) and not text_only:
                        value = json.dumps(value)
                    else:
                        raise TypeError(value)
                if length is not None and len(value) > length:
                    raise ValueError(value)
                return value

            return text
        case Kind.INTEGER:

            def integer(value: Any) -> int:
                if type(value) is not int:  # bool is not an int here
                    raise TypeError(value)
                return value

            return integer
        case Kind.FLOAT:

            def double(value: Any) -> float:
                if type(value) is not float and type(value) is not int:
                    raise TypeError(value)
                return float(value)

            return double
        case Kind.DECIMAL:
            scale = ct.scale or 0
            digits = None if ct.precision is None else ct.precision - scale
            step = Decimal(1).scaleb(-scale)

            def decimal(value: Any) -> Decimal:
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    raise TypeError(value)
                number = Decimal(str(value))  # a JSON number's own digits, not its binary double
                exponent = number.as_tuple().exponent
                if not isinstance(exponent, int) or -exponent > scale:
                    raise ValueError(value)  # not finite, or more fractional digits than the column keeps
                if digits is not None and number != 0 and number.adjusted() + 1 > digits:
                    raise ValueError(value)
                return number.quantize(step)

            return decimal
        case Kind.BOOLEAN:

            def boolean(value: Any) -> bool:
                if type(value) is not bool:
                    raise TypeError(value)
                return value

            return boolean
        case Kind.DATETIME:
            zoned = ct.timezone

            def timestamp(value: Any) -> datetime:
                parsed = _iso(value) if type(value) is str else None
                if not isinstance(parsed, datetime):
                    raise ValueError(value)
                if parsed.tzinfo is None:
                    if zoned:
                        raise ValueError(value)  # no offset for a column of instants: ambiguous
                    return parsed
                instant = parsed.astimezone(UTC)
                return instant if zoned else instant.replace(tzinfo=None)  # naive means UTC

            return timestamp
        case Kind.DATE:

            def day(value: Any) -> date:
                parsed = _iso(value) if type(value) is str else None
                if type(parsed) is not date:
                    raise ValueError(value)
                return parsed

            return day

    def refused(value: Any) -> Any:
        raise TypeError(value)  # time and binary have no JSON form to take them from

    return refused


def _iso(text: str) -> datetime | date | None:
    """An ISO 8601 timestamp (with a time) or date, else None."""
    if len(text) < 10 or not text[:4].isdigit() or text[4] != "-":
        return None
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _optional(document: Any, path: str | None) -> Any:
    try:
        return find(document, path)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _wire(value: Any, style: str) -> Any:
    """A watermark as the API's modified-since parameter takes it."""
    if style == "epoch" and isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(aware.timestamp())
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value) if isinstance(value, Decimal) else value
