"""What an incremental merge writes: the staged keys the target lacks, and the keys whose values
differ from what the target holds. A re-read row that has not changed is neither written nor
counted as updated (sync_assets issue 10)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

Pairs = Iterable[tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]]
ValuesDiffer = Callable[[Pairs], sa.ColumnElement[bool]]


@dataclass(frozen=True)
class UpsertCounts:
    """The staged keys of an incremental, by what the merge did with them."""

    inserted: int  # keys the target did not have
    updated: int  # keys whose values differed: rewritten
    unchanged: int  # keys the target held with identical values: left alone

    @property
    def written(self) -> int:
        return self.inserted + self.updated


@dataclass(frozen=True)
class StagedChanges:
    """The latest staged row per key, outer-joined to the target on the key."""

    latest: sa.Subquery
    joined: sa.Join
    new: sa.ColumnElement[bool]  # no target row has the key
    # Some value of the target row differs from the staged one; None when every column is a key.
    differs: sa.ColumnElement[bool] | None

    @property
    def changed(self) -> sa.ColumnElement[bool] | None:
        """A target row has the key, with other values."""
        return None if self.differs is None else sa.and_(sa.not_(self.new), self.differs)

    def rows_to_write(self, names: Sequence[str]) -> sa.Select[Any]:
        """The staged rows an upsert has to write, in the order of `names`."""
        columns = [self.latest.c[n] for n in names]
        to_write = self.new if self.differs is None else sa.or_(self.new, self.differs)
        return sa.select(*columns).select_from(self.joined).where(to_write)

    def count_query(self) -> sa.Select[Any]:
        """(staged keys, of them in the target, of them changed) in one pass over the join.

        The flags are computed in a derived table first: SQL Server refuses a subquery (its
        IS DISTINCT FROM) inside an aggregate (error 130).
        """
        one = sa.literal_column("1")
        changed = sa.null() if self.changed is None else sa.case((self.changed, one))
        flags = (
            sa.select(sa.case((sa.not_(self.new), one)).label("matched"), changed.label("changed"))
            .select_from(self.joined)
            .subquery("compared")
        )
        return sa.select(sa.func.count(), sa.func.count(flags.c.matched), sa.func.count(flags.c.changed))

    def count(self, conn: sa.Connection) -> UpsertCounts:
        """What the upsert about to run in this transaction will do."""
        staged, matched, changed = conn.execute(self.count_query()).one()
        return UpsertCounts(inserted=staged - matched, updated=changed, unchanged=matched - changed)


def staged_changes(
    latest: sa.Subquery, target: sa.Table, *, key: Sequence[str], values_differ: ValuesDiffer
) -> StagedChanges:
    """Compare `latest` (the deduplicated staged rows) with `target`; key columns are never compared."""
    joined = latest.outerjoin(target, sa.and_(*[latest.c[k] == target.c[k] for k in key]))
    new = target.c[key[0]].is_(None)  # key columns are NOT NULL in the target
    others = [c.name for c in target.columns if c.name not in key]
    if not others:
        return StagedChanges(latest, joined, new, None)
    return StagedChanges(latest, joined, new, values_differ((target.c[n], latest.c[n]) for n in others))
