"""Catalog models for operations: schedules, freshness, retries, validation rules, verification."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)

from sync_assets.catalog.durations import Duration

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _cron_or_mapping(value: Any) -> Any:
    return {"cron": value} if isinstance(value, str) else value


class Schedule(_Strict):
    """When an update type runs: a cron string, or {cron, timezone}."""

    cron: str = Field(description="five-field cron, e.g. 0 3 * * *")
    timezone: str | None = Field(default=None, description="e.g. Europe/Berlin; default: `defaults.timezone`")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        if not croniter.is_valid(cron) or len(cron.split()) != 5:
            msg = f"'{cron}' is not a five-field cron expression"
            raise ValueError(msg)
        return cron

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, timezone: str | None) -> str | None:
        if timezone is not None:
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                msg = f"unknown time zone '{timezone}'"
                raise ValueError(msg) from None
        return timezone

    def interval(self) -> timedelta:
        """The longest gap between two runs over a week of ticks: what freshness must tolerate."""
        return cron_interval(self.cron)


@functools.lru_cache(maxsize=1024)
def cron_interval(cron: str) -> timedelta:
    """Cached: walking a week of ticks costs ~5 ms, and a 500-table catalog asks thousands of times."""
    start = datetime(2026, 1, 5, tzinfo=UTC)
    ticks = croniter(cron, start)
    times = [ticks.get_next(datetime) for _ in range(2)]
    longest = times[1] - times[0]
    while times[-1] < start + timedelta(days=8):
        times.append(ticks.get_next(datetime))
        longest = max(longest, times[-1] - times[-2])
    return longest


ScheduleValue = Annotated[Schedule, BeforeValidator(_cron_or_mapping)]


class Freshness(_Strict):
    """How old a table may get before its freshness policy warns and fails."""

    warn_after: Duration = Field(description="the asset warns when older than this (at least 1m)")
    fail_after: Duration = Field(description="the asset fails when older than this; > `warn_after`")

    @model_validator(mode="after")
    def _ordered(self) -> Freshness:
        if self.warn_after >= self.fail_after:
            msg = "`warn_after` must be shorter than `fail_after`"
            raise ValueError(msg)
        if self.warn_after < timedelta(minutes=1):
            msg = "freshness windows must be at least one minute"
            raise ValueError(msg)
        return self


class Retries(_Strict):
    """Retries of transient errors (connection drops, timeouts, deadlocks) of one connection."""

    max_retries: NonNegativeInt = Field(default=3, description="retries after the first attempt; 0: none")
    delay: Duration = Field(default=timedelta(seconds=10), description="wait before the first retry")
    backoff: Literal["exponential", "linear"] = Field(
        default="exponential", description="how the wait grows between retries"
    )
    jitter: bool = Field(default=True, description="randomise the waits")


class Severity(StrEnum):
    WARN = "warn"
    ERROR = "error"


class AcceptedValues(_Strict):
    """`accepted_values`: every non-NULL value of a column is one of a list."""

    column: Annotated[str, Field(pattern=IDENTIFIER)] = Field(description="a cache column")
    values: list[str | int | float | bool] = Field(min_length=1, description="the values allowed")


class Range(_Strict):
    """`range`: every non-NULL value of a column lies within bounds (inclusive)."""

    column: Annotated[str, Field(pattern=IDENTIFIER)] = Field(description="a cache column")
    min: float | int | None = Field(default=None, description="lowest value allowed")
    max: float | int | None = Field(default=None, description="highest value allowed")


class RowCount(_Strict):
    """`row_count`: the cache table's row count lies within bounds (inclusive)."""

    min: NonNegativeInt | None = Field(default=None, description="fewest rows allowed")
    max: NonNegativeInt | None = Field(default=None, description="most rows allowed")


class ValidationRule(_Strict):
    """One rule, run as an asset check on the cache table: exactly one of the rule keys."""

    not_null: list[Annotated[str, Field(pattern=IDENTIFIER)]] | None = Field(
        default=None, description="columns that must hold no NULL"
    )
    unique: list[Annotated[str, Field(pattern=IDENTIFIER)]] | None = Field(
        default=None, description="columns whose combination must be unique"
    )
    accepted_values: AcceptedValues | None = Field(default=None, description="a column's allowed values")
    range: Range | None = Field(default=None, description="a column's bounds")
    row_count: RowCount | None = Field(default=None, description="the table's row count bounds")
    sql: str | None = Field(
        default=None, description="SELECT returning offending rows; {table} = the cache table"
    )
    name: Annotated[str, Field(pattern=IDENTIFIER)] | None = Field(
        default=None, description="the check's name; default from the rule and its columns"
    )
    severity: Severity = Field(
        default=Severity.ERROR, description="error: a failure blocks downstream assets; warn: reports only"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ValidationRule:
        given = [k for k in _RULE_KEYS if getattr(self, k) is not None]
        if len(given) != 1:
            msg = f"give exactly one of {', '.join(_RULE_KEYS)} (found: {', '.join(given) or 'none'})"
            raise ValueError(msg)
        if self.sql is not None and self.name is None:
            msg = "an `sql` rule needs a `name`"
            raise ValueError(msg)
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _RULE_KEYS if getattr(self, k) is not None)

    @property
    def check_name(self) -> str:
        if self.name:
            return self.name
        columns = {
            "not_null": self.not_null,
            "unique": self.unique,
            "accepted_values": [self.accepted_values.column] if self.accepted_values else None,
            "range": [self.range.column] if self.range else None,
        }.get(self.kind)
        return "_".join([self.kind, *(columns or [])])


_RULE_KEYS = ("not_null", "unique", "accepted_values", "range", "row_count", "sql")


class Verification(_Strict):
    """Source/cache comparison after each sync; `deep` adds checksums per key range."""

    deep: bool = Field(default=False, description="add `deep_reconciliation`: row hashes per key range")
    segment_rows: PositiveInt = Field(default=10_000, description="rows per checksum page of the deep check")
    bisect_to_rows: PositiveInt = Field(
        default=100, description="stop bisecting a differing range below this many rows"
    )


class Alerts(_Strict):
    """Where alerts go besides the Dagster log: a Slack/Teams-compatible incoming webhook."""

    webhook_url: str | None = Field(
        default=None, description="usually ${VAR}; resolved when an alert is sent"
    )
