"""Source and cache compared by primary key range, without moving their rows.

Both databases count their rows (and sum their stored row hashes) per key range, the ranges cut at
every n-th key of the cache. A range whose digests differ is cut again, `fanout` ways, until it
holds `leaf_rows` cache rows or fewer; only then are its keys (and hashes) listed from both sides.
A digest is one aggregate per range, computed by each database itself, so source and cache may be
different engines: the hashes the cache sums are the ones the source computed when it delivered
the rows (dialects/row_hash.py). SQL is portable: CASE, ROW_NUMBER and key comparisons written
out column by column (SQL Server and Oracle have no row-value `<`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

Key = tuple[Any, ...]
CASE_BRANCHES = 64  # ranges per digest query
SPANS_PER_QUERY = 32  # leaf spans per listing query
SPLITS_PER_QUERY = 16  # ranges cut per statement
IN_LIST = 500  # keys per IN list (Oracle allows 1000)
COMPOSITE_IN_LIST = 100  # composite keys per OR list


@dataclass(frozen=True)
class Sizes:
    """How ranges are cut: the first cut, the fan-out of each further one, and the size listed."""

    range_rows: int = 128
    fanout: int = 4
    leaf_rows: int = 32


@dataclass(frozen=True)
class Side:
    """One end of a comparison: its rows, its key columns in key order, and the hash it sums."""

    conn: sa.Connection
    rows: sa.FromClause
    key: Sequence[sa.ColumnElement[Any]]
    hash: sa.ColumnElement[Any] | None = None  # None: compare counts only
    where: Sequence[sa.ColumnElement[bool]] = ()
    # Statements by shape, built once with bind parameters: building one is costlier than running it.
    shapes: dict[tuple[Any, ...], Any] = field(default_factory=dict, compare=False, repr=False)

    def select(self, *columns: sa.ColumnElement[Any]) -> sa.Select[Any]:
        return sa.select(*columns).select_from(self.rows).where(*self.where)

    def shape(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        if key not in self.shapes:
            self.shapes[key] = build()
        return self.shapes[key]


@dataclass(frozen=True)
class Range:
    """Keys after `after` (exclusive) up to `upto` (inclusive); None: unbounded on that side."""

    after: Key | None = None
    upto: Key | None = None


@dataclass(frozen=True)
class Digest:
    rows: int
    hash_sum: int


@dataclass(frozen=True)
class Listed:
    """A listed key as its own side holds it (for statements on that side), and its row hash."""

    key: Key
    hash: int | None


@dataclass
class Differences:
    """What the comparison found; keys are compared in `comparable` form."""

    source: dict[Key, Listed] = field(default_factory=dict)
    cache: dict[Key, Listed] = field(default_factory=dict)
    source_rows: int = 0
    cache_rows: int = 0
    ranges_compared: int = 0

    @property
    def missing(self) -> list[Key]:
        """Cache keys (as the cache holds them) that the source no longer lists."""
        return [listed.key for k, listed in self.cache.items() if k not in self.source]

    @property
    def changed(self) -> list[Key]:
        """Source keys (as the source holds them) the cache lacks or holds with another hash."""
        return [
            listed.key
            for k, listed in self.source.items()
            if k not in self.cache or self.cache[k].hash != listed.hash
        ]

    @property
    def hashes_compared(self) -> int:
        """Keys listed from either side: what was transferred besides digests and fetched rows."""
        return len(self.source) + len(self.cache)


def compare(source: Side, cache: Side, sizes: Sizes | None = None) -> Differences:
    """Narrow the differing key ranges, then list the keys of what is left on both sides.

    The cache's keys are cut block by block (CASE_BRANCHES ranges at a time), so memory holds one
    block's cut points and the differences found, whatever the table's size.
    """
    sizes = sizes or Sizes()
    found = Differences()
    leaves: list[Range] = []
    after: Key | None = None
    while True:
        block, more = _next_block(cache, after, sizes)
        leaves += _narrowed(source, cache, block, sizes, found)
        if not more:
            break
        after = block[-1].upto
    found.source = listing(source, leaves)
    found.cache = listing(cache, leaves)
    return found


def _next_block(cache: Side, after: Key | None, sizes: Sizes) -> tuple[list[Range], bool]:
    """The next CASE_BRANCHES ranges of `range_rows` cache keys after `after`, and whether more
    follow; the last block's last range is open-ended (keys the cache lacks beyond its last)."""
    shape = ("block", after is not None)
    statement = cache.shape(shape, lambda: _block_shape(cache, after is not None))
    params = {**_bound("lo", after), "every": sizes.range_rows, "limit": sizes.range_rows * CASE_BRANCHES}
    cuts = [tuple(row) for row in cache.conn.execute(statement, params)]
    if len(cuts) == CASE_BRANCHES:
        return [Range(a, b) for a, b in itertools.pairwise([after, *cuts])], True
    return [Range(a, b) for a, b in itertools.pairwise([after, *cuts, None])], False


def _block_shape(side: Side, bounded: bool) -> sa.Select[Any]:
    """Every n-th of the next `limit` keys after `lo`: a range scan of the key's index."""
    bounds = Range(_key_params(side, "lo") if bounded else None, None)
    limit = sa.bindparam("limit", type_=sa.Integer())
    keys = side.select(*_labelled(side.key)).where(*within(side.key, bounds)).order_by(*side.key).limit(limit)
    nearest = keys.subquery("nearest")
    columns = [nearest.c[f"_k{i}"] for i in range(len(side.key))]
    n = sa.func.row_number().over(order_by=columns).label("_n")
    numbered = sa.select(*columns, n).subquery("numbered")
    every = sa.bindparam("every", type_=sa.Integer())
    picked = [numbered.c[f"_k{i}"] for i in range(len(side.key))]
    return sa.select(*picked).where(numbered.c._n % every == 0).order_by(numbered.c._n)


def _narrowed(
    source: Side, cache: Side, ranges: list[Range], sizes: Sizes, found: Differences
) -> list[Range]:
    """The ranges of `ranges` that differ, cut until each holds `leaf_rows` cache rows or fewer."""
    leaves: list[Range] = []
    first = True
    while ranges:
        theirs, ours = digests(source, ranges), digests(cache, ranges)
        found.ranges_compared += len(ranges)
        if first:  # the block's own ranges: every row of it, once
            found.source_rows += sum(d.rows for d in theirs)
            found.cache_rows += sum(d.rows for d in ours)
            first = False
        to_cut: list[tuple[Range, int]] = []
        for r, at_source, at_cache in zip(ranges, theirs, ours, strict=True):
            if at_source == at_cache:
                continue
            if at_cache.rows <= sizes.leaf_rows:
                leaves.append(r)
            else:
                to_cut.append((r, max(sizes.leaf_rows, math.ceil(at_cache.rows / sizes.fanout))))
        narrower: list[Range] = []
        for parts in split_many(cache, to_cut):
            (narrower if len(parts) > 1 else leaves).extend(parts)
        ranges = narrower
    return leaves


def split_many(side: Side, jobs: Sequence[tuple[Range, int]]) -> list[list[Range]]:
    """Each range cut after every `every`-th key the side holds in it, SPLITS_PER_QUERY ranges per
    statement (a UNION ALL)."""
    found: list[list[Range]] = []
    for chunk in _batched(jobs, SPLITS_PER_QUERY):
        shape = ("splits", len(chunk), chunk[0][0].after is not None, chunk[-1][0].upto is not None)
        statement = side.shape(shape, lambda chunk=chunk: _splits_shape(side, [r for r, _ in chunk]))
        params: dict[str, Any] = {}
        for k, (r, every) in enumerate(chunk):
            params.update({**_bound(f"p{k}lo", r.after), **_bound(f"p{k}hi", r.upto), f"p{k}every": every})
        cuts: list[list[tuple[int, Key]]] = [[] for _ in chunk]
        for row in side.conn.execute(statement, params):
            cuts[int(row[0])].append((int(row[1]), tuple(row[2:])))
        for (r, _), picked in zip(chunk, cuts, strict=True):
            found.append(_cut(r, [key for _, key in sorted(picked)]))
    return found


def _splits_shape(side: Side, ranges: Sequence[Range]) -> sa.Select[Any] | sa.CompoundSelect:
    """The keys at positions every, 2 * every, ... of each range, tagged with the range's number;
    each branch of the UNION ALL is its own scope, so all can name their rows `numbered`."""
    parts = []
    for k, r in enumerate(ranges):
        n = sa.func.row_number().over(order_by=list(side.key)).label("_n")
        bounds = _params(side, r, f"p{k}lo", f"p{k}hi")
        numbered = side.select(*_labelled(side.key), n).where(*within(side.key, bounds)).subquery("numbered")
        keys = [numbered.c[f"_k{i}"] for i in range(len(side.key))]
        every = sa.bindparam(f"p{k}every", type_=sa.Integer())
        tag = sa.literal_column(str(int(k)), sa.Integer()).label("_p")
        parts.append(sa.select(tag, numbered.c._n, *keys).where(numbered.c._n % every == 0))
    return parts[0] if len(parts) == 1 else sa.union_all(*parts)


def _cut(r: Range, cuts: list[Key]) -> list[Range]:
    """`r` as the ranges between `cuts` (its own last key is no cut: no empty range after it)."""
    if cuts and r.upto is not None and cuts[-1] == r.upto:
        cuts = cuts[:-1]
    return [Range(a, b) for a, b in itertools.pairwise([r.after, *cuts, r.upto])]


def has_rows(side: Side) -> bool:
    return side.conn.execute(side.select(*_labelled(side.key)).limit(1)).first() is not None


def split_statement(side: Side, r: Range, *, every: int) -> sa.Select[Any] | sa.CompoundSelect:
    """The cut statement of `split_many` for one range, its values bound."""
    return _splits_shape(side, [r]).params(**_bound("p0lo", r.after), **_bound("p0hi", r.upto), p0every=every)


def digests(side: Side, ranges: Sequence[Range]) -> list[Digest]:
    """(rows, sum of hashes) of each range. Adjacent ranges share one pass (a CASE numbers them);
    runs that are not adjacent (the parts of differing ranges, cut again) share one statement, a
    UNION ALL of such passes, up to CASE_BRANCHES ranges in all: one round trip, not one per run."""
    runs = [list(chunk) for run in _adjacent_runs(ranges) for chunk in _batched(run, CASE_BRANCHES)]
    # Runs padded to one length with empty ranges (b, b]: statements of a few shapes, each built
    # and planned once, however the cuts fell.
    width = max(map(len, runs), default=0)
    padded = [
        run + [Range(run[-1].upto, run[-1].upto)] * (width - len(run)) if run[-1].upto is not None else run
        for run in runs
    ]
    found: list[Digest] = []
    group: list[list[Range]] = []
    kept: list[int] = []
    for run, original in zip(padded, runs, strict=True):
        if group and sum(map(len, group)) + len(run) > CASE_BRANCHES:
            found.extend(_digest_group(side, group, kept))
            group, kept = [], []
        group.append(run)
        kept.append(len(original))
    if group:
        found.extend(_digest_group(side, group, kept))
    return found


def _digest_group(side: Side, group: Sequence[Sequence[Range]], kept: Sequence[int]) -> list[Digest]:
    """The digests of a group of runs: the first `kept[k]` of run k (the rest is padding)."""
    hashed = side.hash is not None
    shape = ("digest", tuple(map(len, group)), group[0][0].after is not None, group[-1][-1].upto is not None)
    statement = side.shape(shape, lambda: _digest_shape(side, group))
    by_bucket = {
        (int(row[0]), int(row[1])): Digest(int(row[2]), int(row[3] or 0) if hashed else 0)
        for row in side.conn.execute(statement, _digest_params(group))
    }
    return [by_bucket.get((k, i), Digest(0, 0)) for k, count in enumerate(kept) for i in range(count)]


def digest_statement(side: Side, chunk: Sequence[Range]) -> sa.Select[Any] | sa.CompoundSelect:
    """(run, range number, rows, sum of hashes) of adjacent ranges (its values bound)."""
    return _digest_shape(side, [chunk]).params(**_digest_params([chunk]))


def _digest_shape(side: Side, group: Sequence[Sequence[Range]]) -> sa.Select[Any] | sa.CompoundSelect:
    parts = [
        _digest_pass(side, k, len(run), Range(run[0].after, run[-1].upto)) for k, run in enumerate(group)
    ]
    return parts[0] if len(parts) == 1 else sa.union_all(*parts)


def _digest_pass(side: Side, k: int, ranges: int, span: Range) -> sa.Select[Any]:
    """One pass over the span of `ranges` adjacent ranges, each row numbered by a CASE that halves
    the cut points at each level (6 comparisons per row for 64 ranges, SQL Server nests 10). The
    CASE is computed in a derived table: SQL Server and Oracle refuse to group by an expression
    with bind parameters."""
    cuts = [_key_params(side, f"r{k}b{i}") for i in range(ranges - 1)]

    def bucket(first: int, last: int) -> sa.ColumnElement[Any]:
        if first == last:
            return sa.literal(first, sa.Integer())
        middle = (first + last) // 2
        return sa.case(
            (_at_or_before(side.key, cuts[middle]), bucket(first, middle)), else_=bucket(middle + 1, last)
        )

    hashed = [] if side.hash is None else [sa.cast(side.hash, sa.BigInteger()).label("_h")]
    bounds = _params(side, span, f"r{k}lo", f"r{k}hi")
    rows = side.select(bucket(0, ranges - 1).label("_b"), *hashed).where(*within(side.key, bounds))
    ranged = rows.subquery(f"ranged{k}")
    sums = [sa.func.sum(ranged.c._h)] if hashed else [sa.null()]
    run = sa.literal_column(str(int(k)), sa.Integer()).label("_r")  # a number of ours, not a value
    return sa.select(run, ranged.c._b, sa.func.count(), *sums).group_by(ranged.c._b)


def _digest_params(group: Sequence[Sequence[Range]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for k, run in enumerate(group):
        params.update({**_bound(f"r{k}lo", run[0].after), **_bound(f"r{k}hi", run[-1].upto)})
        for i, r in enumerate(run[:-1]):
            params.update(_bound(f"r{k}b{i}", r.upto))
    return params


def listing(side: Side, ranges: Sequence[Range]) -> dict[Key, Listed]:
    """Every key (and its hash) this side holds in `ranges`, by comparable key."""
    spans = [Range(run[0].after, run[-1].upto) for run in _adjacent_runs(ranges)]
    hashed = side.hash is not None
    found: dict[Key, Listed] = {}
    for chunk in _batched(spans, SPANS_PER_QUERY):
        shape = ("listing", len(chunk), chunk[0].after is not None, chunk[-1].upto is not None)
        statement = side.shape(shape, lambda chunk=chunk: _listing_shape(side, chunk))
        params: dict[str, Any] = {}
        for i, span in enumerate(chunk):
            params.update({**_bound(f"s{i}lo", span.after), **_bound(f"s{i}hi", span.upto)})
        for row in side.conn.execute(statement, params):
            key = tuple(row[: len(side.key)])
            found[comparable(key)] = Listed(key, int(row[-1]) if hashed and row[-1] is not None else None)
    return found


def _listing_shape(side: Side, spans: Sequence[Range]) -> sa.Select[Any] | sa.CompoundSelect:
    """One SELECT per span, so each is a range scan of the key's index."""
    hashed = [] if side.hash is None else [sa.cast(side.hash, sa.BigInteger()).label("_h")]
    parts = [
        side.select(*_labelled(side.key), *hashed).where(
            *within(side.key, _params(side, span, f"s{i}lo", f"s{i}hi"))
        )
        for i, span in enumerate(spans)
    ]
    return parts[0] if len(parts) == 1 else sa.union_all(*parts)


def present(side: Side, keys: Sequence[Key]) -> set[Key]:
    """Which of `keys` this side holds (comparable form): the databases' own equality decides."""
    found: set[Key] = set()
    for chunk in key_chunks(keys, len(side.key)):
        rows = side.conn.execute(side.select(*_labelled(side.key)).where(matching(side.key, chunk)))
        found.update(comparable(tuple(row)) for row in rows)
    return found


def matching(key: Sequence[sa.ColumnElement[Any]], keys: Iterable[Key]) -> sa.ColumnElement[bool]:
    """key IN keys; a composite key as an OR of ANDs."""
    keys = list(keys)
    if len(key) == 1:
        return key[0].in_([k[0] for k in keys])
    return sa.or_(*[sa.and_(*[c == v for c, v in zip(key, k, strict=True)]) for k in keys])


def key_chunks(keys: Sequence[Key], width: int) -> Iterator[tuple[Key, ...]]:
    """`keys` in pieces small enough for one `matching` condition."""
    return _batched(keys, IN_LIST if width == 1 else COMPOSITE_IN_LIST)


def within(key: Sequence[sa.ColumnElement[Any]], r: Range) -> list[sa.ColumnElement[bool]]:
    """The conditions of `r`; for a composite key also the leading column's plain range, which an
    index can seek on (the OR form of the full comparison defeats most planners)."""
    where = []
    if r.after is not None:
        where.append(sa.not_(_at_or_before(key, r.after)))
        if len(key) > 1:
            where.append(key[0] >= r.after[0])
    if r.upto is not None:
        where.append(_at_or_before(key, r.upto))
        if len(key) > 1:
            where.append(key[0] <= r.upto[0])
    return where


def _key_params(side: Side, prefix: str) -> Key:
    """Bind parameters standing for one key value, typed as the key's columns."""
    return tuple(sa.bindparam(f"{prefix}_{j}", type_=column.type) for j, column in enumerate(side.key))


def _params(side: Side, r: Range, lower: str, upper: str) -> Range:
    """`r` with bind parameters in place of its bounds (None stays unbounded)."""
    return Range(
        None if r.after is None else _key_params(side, lower),
        None if r.upto is None else _key_params(side, upper),
    )


def _bound(prefix: str, key: Key | None) -> dict[str, Any]:
    """The values of one key for the parameters `_key_params` made."""
    return {} if key is None else {f"{prefix}_{j}": value for j, value in enumerate(key)}


def comparable(key: Key) -> Key:
    """A key as both sides can agree on it: text without the padding of CHAR columns, whole
    decimals as integers (a NUMBER key read as Decimal, cached as BIGINT)."""
    return tuple(_comparable(v) for v in key)


def _comparable(value: Any) -> Any:
    if isinstance(value, str):
        return value.rstrip()
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def _at_or_before(key: Sequence[sa.ColumnElement[Any]], values: Key) -> sa.ColumnElement[bool]:
    """key <= values in key order, column by column."""
    condition = key[-1] <= values[-1]
    for column, value in reversed(list(zip(key[:-1], values[:-1], strict=True))):
        condition = sa.or_(column < value, sa.and_(column == value, condition))
    return condition


def _labelled(key: Sequence[sa.ColumnElement[Any]]) -> list[sa.ColumnElement[Any]]:
    return [k.label(f"_k{i}") for i, k in enumerate(key)]


def _batched(items: Iterable[Any], size: int) -> Iterator[tuple[Any, ...]]:
    """itertools.batched, which Python 3.11 lacks."""
    iterator = iter(items)
    while chunk := tuple(itertools.islice(iterator, size)):
        yield chunk


def _adjacent_runs(ranges: Sequence[Range]) -> Iterator[list[Range]]:
    """`ranges` grouped where each starts at the key the previous one ends at."""
    run: list[Range] = []
    for r in ranges:
        if run and not (run[-1].upto is not None and run[-1].upto == r.after):
            yield run
            run = []
        run.append(r)
    if run:
        yield run
