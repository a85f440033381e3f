"""Schedules from the catalog: one per (update type, cron, time zone), launching that partition.

A table whose sync is already running at the same or a higher priority (mass > daily > hourly)
is left out of the run, with the reason on the run's tags or in the skipped tick; nothing queues
behind a long mass reload.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

import dagster as dg

from sync_assets.catalog.models import Catalog, TableSpec, UpdateType
from sync_assets.catalog.operations import Schedule

PRIORITY = {UpdateType.MASS: 3, UpdateType.DAILY: 2, UpdateType.HOURLY: 1}
SKIPPED_TAG = "sync_assets/skipped"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def schedule_name(update_type: UpdateType, schedule: Schedule) -> str:
    """A readable, stable name: sync_daily_0_3_x_x_x, plus the time zone when it is not UTC."""
    cron = schedule.cron.replace("*", "x").replace("/", "by").replace("-", "to").replace(",", "_")
    name = f"sync_{update_type.value}_{'_'.join(cron.split())}"
    if schedule.timezone and schedule.timezone != "UTC":
        name += "_" + re.sub(r"[^A-Za-z0-9]+", "_", schedule.timezone).lower()
    return name


def build_schedules(
    catalog: Catalog, keys: dict[str, dg.AssetKey]
) -> tuple[list[dg.ScheduleDefinition], list[dg.UnresolvedAssetJobDefinition]]:
    """Tables sharing an update type, cron and time zone share one schedule, job and run."""
    groups: dict[tuple[UpdateType, Schedule], list[TableSpec]] = defaultdict(list)
    for table in catalog.tables:
        for update_type, schedule in table.schedules_for(catalog.defaults).items():
            groups[(update_type, schedule)].append(table)
    schedules, jobs = [], []
    for (update_type, schedule), tables in sorted(groups.items(), key=lambda g: schedule_name(*g[0])):
        name = schedule_name(update_type, schedule)
        group_keys = [keys[t.name] for t in tables]
        job = dg.define_asset_job(
            name,
            selection=dg.AssetSelection.assets(*group_keys),
            description=f"{update_type.value} sync of {', '.join(t.name for t in tables)}",
        )
        jobs.append(job)
        schedules.append(_schedule(name, job, update_type, schedule, group_keys))
    return schedules, jobs


def _schedule(
    name: str,
    job: dg.UnresolvedAssetJobDefinition,
    update_type: UpdateType,
    schedule: Schedule,
    keys: Sequence[dg.AssetKey],
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=name,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"{update_type.value} sync at '{schedule.cron}' ({schedule.timezone})",
    )
    def _tick(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        return plan_tick(context.instance, update_type, keys)

    return _tick


def plan_tick(
    instance: dg.DagsterInstance, update_type: UpdateType, keys: Iterable[dg.AssetKey]
) -> dg.RunRequest | dg.SkipReason:
    """The run for this tick, without the tables a same-or-higher-priority run is syncing."""
    busy = _busy_tables(instance, update_type)
    wanted = list(keys)
    free = [k for k in wanted if k not in busy]
    skipped = sorted(f"{k.to_user_string()} ({busy[k]})" for k in wanted if k in busy)
    if not free:
        return dg.SkipReason(
            f"every table of this {update_type.value} sync is already being synced: " + "; ".join(skipped)
        )
    tags = {SKIPPED_TAG: "; ".join(skipped)[:4000]} if skipped else {}
    return dg.RunRequest(partition_key=update_type.value, asset_selection=free, tags=tags)


def _busy_tables(instance: dg.DagsterInstance, update_type: UpdateType) -> dict[dg.AssetKey, str]:
    """Tables in active runs whose partition has this update type's priority or higher."""
    busy: dict[dg.AssetKey, str] = {}
    for record in instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES)):
        run = record.dagster_run
        partition = run.tags.get("dagster/partition")
        if partition not in {u.value for u in UpdateType}:
            continue
        if PRIORITY[UpdateType(partition)] < PRIORITY[update_type] or run.asset_selection is None:
            continue
        for key in run.asset_selection:
            busy.setdefault(key, f"{partition} run {run.run_id[:8]} {run.status.value.lower()}")
    return busy
