"""The state of one table and update type, by the rules the staleness checks use.

`running` while a live sync holds it; `failed` when its latest finished attempt failed; else its
staleness as `freshness.assess` judges it, from the last success in sync_log and whether its
schedule runs: `stale`, `not_scheduled`, `ok`, or `never` without any success.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sync_assets.assets.freshness import STOPPED, Freshness, ScheduleState, Staleness, assess
from sync_assets.catalog.models import UpdateType
from sync_assets.sync.history import Attempt, History


class State(StrEnum):
    OK = "ok"
    FAILED = "failed"
    STALE = "stale"  # its schedule runs, and its last success is past the warn or fail window
    RUNNING = "running"
    NEVER = "never"  # never succeeded, and nothing says it should have by now
    NOT_SCHEDULED = "not_scheduled"  # no running schedule syncs it: staleness is not counted


@dataclass(frozen=True)
class FailingCheck:
    name: str
    severity: str  # ERROR or WARN
    description: str | None


@dataclass(frozen=True)
class Lag:
    """How far the cache's newest `updated_at` trails the source's (the `source_lag` check)."""

    seconds: float | None
    source_max: object
    cache_max: object
    passed: bool
    description: str | None


@dataclass(frozen=True)
class Status:
    table: str
    update_type: UpdateType
    state: State
    history: History
    schedule: str | None = None  # the schedule that syncs it, when the catalog has one
    freshness: str | None = None  # what the staleness rule said, when it was asked
    failing_checks: tuple[FailingCheck, ...] | None = None  # None: the instance was not read
    lag: Lag | None = None
    unreachable: str | None = None  # a database it needs could not be used, and why

    @property
    def error(self) -> str | None:
        """Why it cannot be looked at, else the error of its last failure."""
        if self.unreachable:
            return self.unreachable
        return self.history.last_failure.error if self.history.last_failure else None

    @property
    def watermark(self) -> str | None:
        """`watermark_to` of the latest success: the newest source change the cache holds."""
        return self.history.last_success.watermark_to if self.history.last_success else None

    @property
    def reset(self) -> str | None:
        """Where the next incremental starts after `sync-assets reset`: "full", or the watermark."""
        reset = self.history.reset
        if reset is None or not self.update_type.is_incremental:
            return None
        return reset.watermark_to or "full"

    @property
    def alarming(self) -> bool:
        """What makes `sync-assets status` exit non-zero."""
        return self.state in (State.FAILED, State.STALE) or self.unreachable is not None


def status_of(
    table: str,
    update_type: UpdateType,
    history: History | None,
    *,
    staleness: Staleness | None,
    schedules: Mapping[str, ScheduleState] | None,
    now: datetime,
    unreachable: str | None = None,
) -> Status:
    """The state of `table`'s `update_type`. `history` None: its cache could not be read (a
    failure); `schedules` None: no Dagster instance, so staleness is not judged."""
    schedule = staleness.group.name if staleness else None
    if history is None:
        return Status(table, update_type, State.FAILED, History(), schedule=schedule, unreachable=unreachable)

    def status(state: State, freshness: str | None = None) -> Status:
        return Status(
            table, update_type, state, history, schedule, freshness=freshness, unreachable=unreachable
        )

    if history.running:
        return status(State.RUNNING)
    if history.last_finished is not None and history.last_finished.failed:
        return status(State.FAILED)
    success = history.last_success
    if schedules is None:
        return status(State.OK if success else State.NEVER)
    if staleness is None:
        return status(State.NOT_SCHEDULED if success else State.NEVER)
    found = assess(
        staleness.group,
        staleness.warn,
        staleness.fail,
        last_success=_timestamp(success),
        schedule=schedules.get(staleness.group.name, STOPPED),
        now=now.timestamp(),
    )
    if not found.passed:
        return status(State.STALE, found.description)
    if found.state is Freshness.NOT_SCHEDULED:
        return status(State.NOT_SCHEDULED if success else State.NEVER, found.description)
    return status(State.OK if success else State.NEVER, found.description)


def _timestamp(attempt: Attempt | None) -> float | None:
    return attempt.ended_at.replace(tzinfo=UTC).timestamp() if attempt else None
