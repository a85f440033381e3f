"""Schedules from the catalog: one per (update type, cron, time zone), launching that update type.

Names read as what they do: the catalog's default schedule of an update type is `sync_daily`;
tables with a cron of their own share `sync_daily_at_06_30_monday_through_friday_europe_berlin`.
Each schedule targets its tables' assets directly (Dagster keeps such jobs out of the job lists),
so an asset page lists the schedules that sync it and no job per schedule.

A table whose sync is already running at the same or a higher priority (mass > daily > hourly)
is left out of the run, with the reason on the run's tags or in the skipped tick; nothing queues
behind a long mass reload.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import dagster as dg
from cron_descriptor import Options, get_description

from sync_assets.assets.partitions import partitions_for
from sync_assets.catalog.models import Catalog, TableSpec, UpdateType
from sync_assets.catalog.operations import Schedule

PRIORITY = {UpdateType.MASS: 3, UpdateType.DAILY: 2, UpdateType.HOURLY: 1}
SKIPPED_TAG = "sync_assets/skipped"
UPDATE_TYPE_TAG = "sync_assets/update_type"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
TABLES_LISTED = 12  # a description names this many tables, then counts the rest


@dataclass(frozen=True)
class ScheduleGroup:
    """The tables one schedule syncs: same update type, cron and time zone."""

    name: str
    update_type: UpdateType
    schedule: Schedule  # time zone always set
    tables: tuple[TableSpec, ...]

    @cached_property
    def when(self) -> str:
        """The cron in words, e.g. 'at 06:30, Monday through Friday (Europe/Berlin)'."""
        return f"{_cron_in_words(self.schedule.cron)} ({self.schedule.timezone})"

    @property
    def description(self) -> str:
        names = [t.name for t in self.tables]
        listed = ", ".join(names[:TABLES_LISTED])
        if len(names) > TABLES_LISTED:
            listed += f" and {len(names) - TABLES_LISTED} more"
        count = f"{len(names)} table{'s' if len(names) != 1 else ''}"
        return (
            f"{self.update_type.value.capitalize()} sync of {count} {self.when}, "
            f"cron '{self.schedule.cron}': {listed}"
        )


def schedule_groups(catalog: Catalog) -> list[ScheduleGroup]:
    """Every schedule of the catalog, in name order; tables sharing a cron share one."""
    members: dict[tuple[UpdateType, Schedule], list[TableSpec]] = defaultdict(list)
    for table in catalog.tables:
        for update_type, schedule in table.schedules_for(catalog.defaults).items():
            members[(update_type, schedule)].append(table)
    names: dict[str, tuple[UpdateType, Schedule]] = {}
    # In a stable order, so the same catalog always gives the same names (a running schedule's
    # state is stored under its name).
    for update_type, schedule in sorted(members, key=lambda k: (k[0].value, k[1].cron, str(k[1].timezone))):
        name = _name(catalog, update_type, schedule)
        if name in names:  # two spellings of the same cron read the same
            name += "_" + hashlib.sha256(schedule.cron.encode()).hexdigest()[:6]
        names[name] = (update_type, schedule)
    return sorted(
        (ScheduleGroup(name, u, s, tuple(members[(u, s)])) for name, (u, s) in names.items()),
        key=lambda group: group.name,
    )


def _name(catalog: Catalog, update_type: UpdateType, schedule: Schedule) -> str:
    default = catalog.defaults.schedules.get(update_type)
    if default is not None and (default.cron, default.timezone or catalog.defaults.timezone) == (
        schedule.cron,
        schedule.timezone,
    ):
        return f"sync_{update_type.value}"
    words = [_cron_in_words(schedule.cron)]
    if schedule.timezone != catalog.defaults.timezone:
        words.append(str(schedule.timezone))
    return f"sync_{update_type.value}_" + re.sub(r"[^a-z0-9]+", "_", " ".join(words).lower()).strip("_")


def _cron_in_words(cron: str) -> str:
    options = Options()
    options.use_24hour_time_format = True
    text = get_description(cron, options)
    return text[:1].lower() + text[1:]


def build_schedules(catalog: Catalog, keys: dict[str, dg.AssetKey]) -> list[dg.ScheduleDefinition]:
    """One schedule per group, each targeting its own tables' assets."""
    return [_schedule(group, keys) for group in schedule_groups(catalog)]


def _schedule(group: ScheduleGroup, keys: dict[str, dg.AssetKey]) -> dg.ScheduleDefinition:
    partitioned = frozenset(keys[t.name] for t in group.tables if partitions_for(t) is not None)
    group_keys = [keys[t.name] for t in group.tables]

    @dg.schedule(
        name=group.name,
        cron_schedule=group.schedule.cron,
        execution_timezone=group.schedule.timezone,
        target=dg.AssetSelection.assets(*group_keys),
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=group.description,
    )
    def _tick(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        return plan_tick(context.instance, group.update_type, group_keys, partitioned=partitioned)

    return _tick


def plan_tick(
    instance: dg.DagsterInstance,
    update_type: UpdateType,
    keys: Iterable[dg.AssetKey],
    *,
    partitioned: frozenset[dg.AssetKey],
) -> dg.RunRequest | dg.SkipReason:
    """The run for this tick, without the tables a same-or-higher-priority run is syncing.

    Tables without `updated_at` are unpartitioned (mass only): a run of them alone has no
    partition; beside partitioned tables they run in the same run, as their mass.
    """
    busy = _busy_tables(instance, update_type)
    wanted = list(keys)
    free = [k for k in wanted if k not in busy]
    skipped = sorted(f"{k.to_user_string()} ({busy[k]})" for k in wanted if k in busy)
    if not free:
        return dg.SkipReason(
            f"every table of this {update_type.value} sync is already being synced: " + "; ".join(skipped)
        )
    tags = {UPDATE_TYPE_TAG: update_type.value}
    if skipped:
        tags[SKIPPED_TAG] = "; ".join(skipped)[:4000]
    partition = update_type.value if partitioned.intersection(free) else None
    return dg.RunRequest(partition_key=partition, asset_selection=free, tags=tags)


def run_update_type(run: dg.DagsterRun) -> UpdateType | None:
    """The update type a run syncs: its schedule's tag, else its partition; a run without a
    partition can only sync unpartitioned (mass-only) tables, so it is a mass."""
    value = run.tags.get(UPDATE_TYPE_TAG) or run.tags.get("dagster/partition") or UpdateType.MASS.value
    return UpdateType(value) if value in {u.value for u in UpdateType} else None


def _busy_tables(instance: dg.DagsterInstance, update_type: UpdateType) -> dict[dg.AssetKey, str]:
    """Tables in active runs whose update type has this one's priority or higher."""
    busy: dict[dg.AssetKey, str] = {}
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES)):
        run = record.dagster_run
        running = run_update_type(run)
        if running is None or PRIORITY[running] < PRIORITY[update_type] or run.asset_selection is None:
            continue
        for key in run.asset_selection:
            busy.setdefault(key, f"{running.value} run {run.run_id[:8]} {run.status.value.lower()}")
    return busy


def groups_by_table(groups: Sequence[ScheduleGroup]) -> dict[tuple[str, UpdateType], ScheduleGroup]:
    """(table name, update type) -> the schedule that syncs it."""
    return {(t.name, g.update_type): g for g in groups for t in g.tables}
