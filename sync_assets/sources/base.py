"""The interface the runner reads every kind of source through.

A source is one catalog table of one source connection. It describes its columns (cache names,
neutral types), reads the watermark's upper bound, and yields bounded polars batches in cache
types for a window (a full load reads every row). A database source may also offer a direct copy
into a cache of its own kind, where the rows never pass through Python.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import polars as pl
import sqlalchemy as sa

from sync_assets.catalog.models import TableSpec
from sync_assets.dialects import CacheDialect
from sync_assets.sync.key_ranges import Side
from sync_assets.types import ColumnType

Log = Callable[[str], None]


class Column(Protocol):
    """A column as the cache will hold it: its name there and its neutral type (None until known)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> ColumnType | None: ...


@dataclass(frozen=True)
class Window:
    """The rows of an incremental: low <= watermark <= high (no `low`: from the first row); or,
    for `change_detection: hash`, the rows of exactly these primary keys."""

    low: Any = None
    high: Any = None
    keys: tuple[tuple[Any, ...], ...] | None = None


@dataclass(frozen=True)
class DirectCopy:
    """Rows the two databases copy themselves: `copy(window, dest)` runs inside `session()`, in the
    cache's open transaction, and returns the number of rows copied (no window: every row)."""

    session: Callable[[], AbstractContextManager[Any]]
    copy: Callable[[Window | None, sa.Table], int]


class Source(ABC):
    """One catalog table as a sync reads it."""

    table: TableSpec
    # Whether max_watermark() knows the newest watermark before the read (a database does, an API
    # does not): an incremental reads up to it, or, without one, everything from its start.
    upper_bound_known: ClassVar[bool] = True

    @property
    @abstractmethod
    def columns(self) -> Sequence[Column]:
        """Every column of the batches, in order, under its cache name."""

    @property
    def typed(self) -> bool:
        """Whether every column's type is known before the first batch (a query's come with it)."""
        return all(c.type is not None for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @abstractmethod
    def max_watermark(self) -> Any:
        """The newest watermark at the source now, as the cache holds it: an incremental's upper
        bound (None: no rows yet, or `upper_bound_known` is False)."""

    @abstractmethod
    def batches(self, window: Window | None) -> Generator[pl.DataFrame]:
        """The rows of `window` (None: every row) in bounded batches of cache types; closing the
        generator releases the read."""

    def prepare(self, cache: sa.Connection) -> None:  # noqa: B027 (a hook: most sources need none)
        """Before planning: read from the cache what this source's increments build on (a file
        manifest); most sources keep nothing there."""

    def record(self, cache: sa.Connection, *, full: bool) -> None:  # noqa: B027 (a hook)
        """Inside the sync's commit transaction: record what this sync read (a file manifest)."""

    def adopt(self, types: dict[str, ColumnType]) -> None:  # noqa: B027 (a hook: typed sources ignore it)
        """The types the cache table already has, for a source typed by its rows: an incremental
        keeps them, so one batch of odd values cannot retype a column."""

    def settled(self, first: pl.DataFrame | None) -> Source:
        """This source with the column types its first batch showed (for a source not `typed`)."""
        return self

    def compared(self) -> Side | None:
        """This source's side of a key-range comparison (deletes, `change_detection: hash`); None
        where the source cannot count and hash rows by key range itself."""
        return None

    def direct_copy(self, cache: sa.Connection, dialect: CacheDialect, target: sa.Table) -> DirectCopy | None:
        """A copy straight into `cache`, where the two databases can do it; None otherwise."""
        return None

    @abstractmethod
    def is_transient(self, error: BaseException) -> bool:
        """Whether an error of this source may clear up by itself (and is worth a retry)."""
