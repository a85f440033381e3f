"""Per-update-type staleness: Dagster's freshness policy counts any partition, these do not.

An hourly success would otherwise hide a daily or mass sync that has been failing for days, so
each scheduled update type gets an asset check on its own partition's last success. Staleness
counts only while that update type's schedule runs, and only from the first tick that was due
after it was started: a catalog just deployed, schedules stopped, raises no alarm. The
`sync_freshness` sensor evaluates the checks on a timer and records a result whenever a check's
state changes from the one last recorded (by itself or by a sync's own step).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import dagster as dg
from croniter import croniter

# Dagster has no public API for a schedule's running state or a check's executions; its webserver
# reads them this way.
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES as COMPLETED,
)
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

from sync_assets.assets.partitions import partitions_for
from sync_assets.assets.schedules import ScheduleGroup, groups_by_table, schedule_groups
from sync_assets.catalog.models import FAIL_INTERVALS, WARN_INTERVALS, Catalog, UpdateType

FRESHNESS_SENSOR = "sync_freshness"
STATE_METADATA = "sync_assets/state"
LOOKUP_BATCH = 500  # check keys per query of the latest recorded evaluations


class Freshness(StrEnum):
    """What a staleness check found; the first three pass."""

    NOT_SCHEDULED = "not_scheduled"  # its schedule is stopped: staleness is not counted
    NOT_DUE = "not_due"  # started, but its first tick is still to come
    FRESH = "fresh"
    LATE = "late"  # past the warn window
    STALE = "stale"  # past the fail window


@dataclass(frozen=True)
class ScheduleState:
    """Whether a schedule runs, and since when (its latest start)."""

    running: bool
    started_at: float | None = None


STOPPED = ScheduleState(running=False)


@dataclass(frozen=True)
class Assessment:
    state: Freshness
    description: str
    age_s: float | None = None

    @property
    def passed(self) -> bool:
        return self.state in (Freshness.NOT_SCHEDULED, Freshness.NOT_DUE, Freshness.FRESH)

    @property
    def severity(self) -> dg.AssetCheckSeverity:
        return dg.AssetCheckSeverity.ERROR if self.state is Freshness.STALE else dg.AssetCheckSeverity.WARN


def first_due(group: ScheduleGroup, started_at: float) -> float:
    """The first tick of the schedule after it was started (UTC timestamp)."""
    start = datetime.fromtimestamp(started_at, ZoneInfo(group.schedule.timezone or "UTC"))
    return croniter(group.schedule.cron, start).get_next(datetime).timestamp()


def assess(
    group: ScheduleGroup,
    warn: timedelta,
    fail: timedelta,
    *,
    last_success: float | None,
    schedule: ScheduleState,
    now: float,
) -> Assessment:
    """How stale one update type of one table is; the same rule for the check and the CLI."""
    kind = group.update_type.value
    if not schedule.running:
        return Assessment(Freshness.NOT_SCHEDULED, f"not scheduled: {group.name} is stopped")
    # A running schedule with no start time on record (older Dagster states) counts as running
    # since ever: staleness from its last success alone.
    due = first_due(group, schedule.started_at) if schedule.started_at is not None else 0.0
    if now < due and (last_success is None or last_success < due):
        when = datetime.fromtimestamp(due, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return Assessment(
            Freshness.NOT_DUE, f"scheduled by {group.name}; the first {kind} sync is due {when}"
        )
    since = max(due, last_success or due)
    age = now - since
    ago = timedelta(seconds=int(age))
    if age > fail.total_seconds():
        state = Freshness.STALE
    elif age > warn.total_seconds():
        state = Freshness.LATE
    else:
        state = Freshness.FRESH
    if last_success is not None and last_success >= due:
        text = f"{state.value}: last {kind} sync {ago} ago"
    elif schedule.started_at is None:
        return Assessment(state, f"{state.value}: no successful {kind} sync while {group.name} runs")
    else:
        text = f"{state.value}: no successful {kind} sync since {group.name} was first due, {ago} ago"
    return Assessment(state, text, age_s=round(age, 1))


@dataclass(frozen=True)
class Staleness:
    """Warn after `warn`, fail after `fail` without a successful sync of this update type."""

    key: dg.AssetKey
    group: ScheduleGroup
    warn: timedelta
    fail: timedelta
    partitioned: bool

    @property
    def update_type(self) -> UpdateType:
        return self.group.update_type

    @property
    def check_name(self) -> str:
        return f"{self.update_type.value}_fresh"

    @property
    def check_key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.key, self.check_name)

    @property
    def spec(self) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            self.check_name,
            asset=self.key,
            description=(
                f"While {self.group.name} runs, the last successful {self.update_type.value} sync is at "
                f"most {self.warn} old (warn) / {self.fail} old (fail), counted from its first due tick."
            ),
        )

    def last_success(self, instance: dg.DagsterInstance) -> tuple[float, str] | None:
        """(timestamp, run id) of this update type's latest materialization."""
        partitions = [self.update_type.value] if self.partitioned else None
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=self.key, asset_partitions=partitions), limit=1
        ).records
        return (records[0].timestamp, records[0].run_id) if records else None

    def evaluate(
        self,
        instance: dg.DagsterInstance,
        *,
        schedules: Mapping[str, ScheduleState],
        now: float | None = None,
    ) -> dg.AssetCheckResult:
        state = schedules.get(self.group.name, STOPPED)
        last = self.last_success(instance) if state.running else None
        found = assess(
            self.group,
            self.warn,
            self.fail,
            last_success=last[0] if last else None,
            schedule=state,
            now=now or time.time(),
        )
        metadata: dict[str, object] = {
            STATE_METADATA: found.state.value,
            "schedule": self.group.name,
            "warn_after_s": self.warn.total_seconds(),
            "fail_after_s": self.fail.total_seconds(),
        }
        if found.age_s is not None:
            metadata["age_s"] = found.age_s
        if last is not None:
            metadata["last_run_id"] = last[1]
        return dg.AssetCheckResult(
            asset_key=self.key,
            check_name=self.check_name,
            passed=found.passed,
            severity=found.severity,
            description=found.description,
            metadata=metadata,
        )


def stalenesses(catalog: Catalog, key_of: Mapping[str, dg.AssetKey]) -> dict[str, list[Staleness]]:
    """Per table name, one check per scheduled update type: warn after 1.5 intervals, fail after 3."""
    groups = groups_by_table(schedule_groups(catalog))
    found: dict[str, list[Staleness]] = {}
    for table in catalog.tables:
        found[table.name] = [
            Staleness(
                key_of[table.name],
                groups[(table.name, update_type)],
                warn=schedule.interval() * WARN_INTERVALS,
                fail=schedule.interval() * FAIL_INTERVALS,
                partitioned=partitions_for(table) is not None,
            )
            for update_type, schedule in table.schedules_for(catalog.defaults).items()
        ]
    return found


def schedule_states(
    instance: dg.DagsterInstance, *, location: str | None = None, repository: str | None = None
) -> dict[str, ScheduleState]:
    """Running schedules by name (of one code location when given); any other is stopped.

    sync_assets' schedules ship stopped, so a schedule with no stored state is stopped too.
    """
    running: dict[str, ScheduleState] = {}
    for state in instance.all_instigator_state(
        instigator_type=InstigatorType.SCHEDULE, instigator_statuses={InstigatorStatus.RUNNING}
    ):
        origin = state.origin.repository_origin
        if location is not None and origin.code_location_origin.location_name != location:
            continue
        if repository is not None and origin.repository_name != repository:
            continue
        started = getattr(state.instigator_data, "start_timestamp", None)
        running[state.instigator_name] = ScheduleState(running=True, started_at=started)
    return running


def latest_evaluations(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey]
) -> dict[dg.AssetCheckKey, dg.AssetCheckEvaluation | None]:
    """The latest completed evaluation of each check (any partition), in a few queries; None for a
    check a run that has not finished is evaluating right now (it will record the result itself).

    Read from the check-execution index, which every event log storage keeps (run-sharded SQLite
    included), not by scanning events with a cursor. A check left planned by a run that ended
    without evaluating it (a crash, a failed sync) falls back to its latest completed evaluation.
    """
    found: dict[dg.AssetCheckKey, dg.AssetCheckEvaluation | None] = {}
    storage = instance.event_log_storage
    for start in range(0, len(keys), LOOKUP_BATCH):
        batch = keys[start : start + LOOKUP_BATCH]
        for key, latest in storage.get_latest_asset_check_execution_by_key(batch).items():
            record: AssetCheckExecutionRecord | None = latest
            if key not in batch or record is None:
                continue
            if record.status is AssetCheckExecutionRecordStatus.PLANNED:
                run = instance.get_run_by_id(record.run_id)
                if run is not None and not run.is_finished:
                    found[key] = None
                    continue
                done = storage.get_asset_check_execution_history(key, limit=1, status=COMPLETED)
                record = done[0] if done else None
            event = record.event.dagster_event if record and record.event else None
            data = event.event_specific_data if event else None
            if isinstance(data, dg.AssetCheckEvaluation):
                found[key] = data
    return found


def _recorded_state(evaluation: dg.AssetCheckEvaluation) -> str | None:
    value = evaluation.metadata.get(STATE_METADATA)
    return str(getattr(value, "value", value)) if value is not None else None


def build_freshness_sensor(items: Sequence[Staleness], *, interval_seconds: int = 300) -> dg.SensorDefinition:
    """Evaluates every staleness check and records those whose state changed."""

    @dg.sensor(
        name=FRESHNESS_SENSOR,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records each table's per-update-type staleness checks in the UI when they change.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        origin = context.code_location_origin
        schedules = schedule_states(
            context.instance,
            location=origin.location_name if origin else None,
            repository=context.repository_name,
        )
        recorded = latest_evaluations(context.instance, [item.check_key for item in items])
        events = []
        for item in items:
            if item.check_key in recorded and recorded[item.check_key] is None:
                continue  # a sync's step is evaluating it now
            result = item.evaluate(context.instance, schedules=schedules)
            previous = recorded.get(item.check_key)
            if previous is not None and _recorded_state(previous) == result.metadata[STATE_METADATA].value:
                continue
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=item.key,
                    check_name=item.check_name,
                    passed=result.passed,
                    severity=result.severity,
                    description=result.description,
                    metadata=result.metadata,
                )
            )
        return dg.SensorResult(asset_events=events)

    return _sensor
