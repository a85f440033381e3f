"""Alerting sensors: syncs that fail and recover, checks (staleness, verification, rules) that do.

Both keep a small state in their cursor (what is failing now) and alert on changes only: once
when a table's sync or a check starts failing, once when it recovers, never for a repeat. Both read
through storage calls every Dagster instance supports, run-sharded SQLite included: run ends from
the run-status index (by storage id, the way Dagster's own run-status sensors read it), check
results from the check-execution index. The failure sensor reads every run that ended since its
last tick (from its first tick on); for a check, two changes between two ticks collapse into the
latest state.

Dagster's own run-failure sensors stay silent when a non-blocking check fails and say nothing
when a table recovers; open-source Dagster sends no freshness alerts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import dagster as dg

from sync_assets.assets.freshness import latest_evaluations
from sync_assets.assets.schedules import run_update_type
from sync_assets.catalog.models import UpdateType
from sync_assets.resources.alerts import Alerter

ALERTER_KEY = "sync_alerter"
FAILURE_SENSOR = "sync_failure_alerts"
CHECK_SENSOR = "sync_check_alerts"
RUNS_PER_TICK = 200
# On the Failure of a sync that was interrupted (Ctrl-C, Terminate): a cancellation, not a failure.
CANCELLED_METADATA = "sync_assets/cancelled"
RunEnd = Literal[dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE]
RUN_ENDS: tuple[RunEnd, ...] = (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE)


def build_failure_alert_sensor(tables: Mapping[dg.AssetKey, bool]) -> dg.SensorDefinition:
    """`tables`: each table asset's key, and whether it is partitioned by update type."""
    by_step = {key.to_python_identifier(): key for key in tables}

    @dg.sensor(
        name=FAILURE_SENSOR,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts once when a table's sync starts failing, once when it succeeds again.",
    )
    def _sensor(context: dg.SensorEvaluationContext, sync_alerter: Alerter) -> dg.SkipReason:
        state = json.loads(context.cursor or "{}")
        failing: dict[str, str] = state.get("failing", {})
        if "after" not in state:  # first tick: alert on what ends from now on
            latest = (_run_ends(context.instance, kind, None, limit=1, ascending=False) for kind in RUN_ENDS)
            last = max((r.storage_id for page in latest for r in page.records), default=-1)
            context.update_cursor(json.dumps({"after": last, "failing": failing}))
            return dg.SkipReason("started: watching runs that end from now on")
        ends, after = _ends_since(context.instance, state["after"])
        runs = _runs(context.instance, {record.run_id for record in ends})
        sent = 0
        for record in ends:
            run = runs.get(record.run_id)
            if run is not None and _ours(run, tables):
                sent += _report(context, sync_alerter, run, tables, by_step, failing)
        context.update_cursor(json.dumps({"after": after, "failing": failing}))
        return dg.SkipReason(f"{len(ends)} finished runs read, {sent} alerts sent, {len(failing)} failing")

    return _sensor


def _run_ends(
    instance: dg.DagsterInstance, kind: RunEnd, after: int | None, limit: int, ascending: bool = True
) -> dg.EventRecordsResult:
    """Read from the index every storage keeps run status changes in (run-sharded SQLite too)."""
    records_filter = dg.RunStatusChangeRecordsFilter(event_type=kind, after_storage_id=after)
    return instance.fetch_run_status_changes(records_filter, limit=limit, ascending=ascending)


def _ends_since(instance: dg.DagsterInstance, after: int) -> tuple[list[dg.EventLogRecord], int]:
    """Run successes and failures recorded after storage id `after`, in the order they were
    recorded, and the id to read from next time.

    Each kind is read separately (one event type per call); when one hits the page limit, both
    stop at its last id so a failure and the success that follows it stay in order.
    """
    pages = [_run_ends(instance, kind, after, RUNS_PER_TICK) for kind in RUN_ENDS]
    full = [page.records[-1].storage_id for page in pages if page.has_more and page.records]
    stop = min(full, default=None)
    ends = sorted(
        (r for page in pages for r in page.records if stop is None or r.storage_id <= stop),
        key=lambda r: r.storage_id,
    )
    return ends, (ends[-1].storage_id if ends else after)


def _runs(instance: dg.DagsterInstance, run_ids: set[str]) -> dict[str, dg.DagsterRun]:
    if not run_ids:
        return {}
    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=sorted(run_ids)))
    return {r.dagster_run.run_id: r.dagster_run for r in records}


def _ours(run: dg.DagsterRun, tables: Mapping[dg.AssetKey, bool]) -> bool:
    return run.asset_selection is not None and not run.asset_selection.isdisjoint(tables)


def _report(
    context: dg.SensorEvaluationContext,
    alerter: Alerter,
    run: dg.DagsterRun,
    tables: Mapping[dg.AssetKey, bool],
    by_step: Mapping[str, dg.AssetKey],
    failing: dict[str, str],
) -> int:
    """Alert for the tables of one finished run that changed state; returns the alerts sent."""
    instance = context.instance
    update_type = run_update_type(run) or UpdateType.MASS
    selected = [k for k in sorted(run.asset_selection or (), key=str) if k in tables]

    def name(key: dg.AssetKey) -> str:
        kind = update_type if tables[key] else UpdateType.MASS
        return f"{key.to_user_string()}:{kind.value}"

    if run.status == dg.DagsterRunStatus.SUCCESS and not any(name(k) in failing for k in selected):
        return 0
    synced = {e.asset_key for e in _events(instance, run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)}
    errors: dict[dg.AssetKey, str] = {}
    if run.status == dg.DagsterRunStatus.FAILURE:
        failures = list(_events(instance, run.run_id, dg.DagsterEventType.STEP_FAILURE))
        for event in failures:
            key = by_step.get(event.step_key or "")
            if key is not None and not _cancelled(event):
                errors[key] = _error_text(event)
        if not failures:  # the run failed around its steps (crashed, reaped): every unsynced table
            message = _run_failure_message(instance, run.run_id)
            errors = {k: message for k in selected if k not in synced}
    sent = 0
    newly = [k for k in selected if k in errors and name(k) not in failing]
    if newly:
        lines = [f"{k.to_user_string()}: {errors[k]}" for k in newly]
        title = f"Sync failed ({update_type.value}): {', '.join(k.path[-1] for k in newly)}, run {run.run_id}"
        alerter.send(title, lines, log=context.log)
        sent += 1
    for key in newly:
        failing[name(key)] = run.run_id
    for key in selected:  # synced, and its step did not fail after (a blocking check)
        if key in synced and key not in errors and name(key) in failing:
            first = failing.pop(name(key))
            alerter.send(
                f"Recovered: {name(key)}",
                [f"synced by run {run.run_id}; failing since run {first}"],
                log=context.log,
            )
            sent += 1
    return sent


def _events(instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType) -> Iterable[Any]:
    for entry in instance.all_logs(run_id, of_type=kind):
        if entry.dagster_event is not None:
            yield entry.dagster_event


def _run_failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    for event in _events(instance, run_id, dg.DagsterEventType.RUN_FAILURE):
        return (event.message or "run failed").strip()
    return "run failed"


def _cancelled(event: dg.DagsterEvent) -> bool:
    data = event.step_failure_data.user_failure_data if event.step_failure_data else None
    return data is not None and CANCELLED_METADATA in (data.metadata or {})


def _error_text(event: dg.DagsterEvent) -> str:
    """The sync's own message (a `Failure`'s description), else the error's, without its class."""
    data = event.step_failure_data
    if data is None:
        return "failed"
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description.strip()
    return data.error.message.strip() if data.error else "failed"


def build_check_alert_sensor(check_keys: Sequence[dg.AssetCheckKey]) -> dg.SensorDefinition:
    """Alerts on the catalog's checks, read from their latest recorded evaluations."""
    keys = sorted(check_keys, key=str)

    @dg.sensor(
        name=CHECK_SENSOR,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts once when a check starts failing or warning, once when it passes again.",
    )
    def _sensor(context: dg.SensorEvaluationContext, sync_alerter: Alerter) -> dg.SkipReason:
        state = json.loads(context.cursor or "{}")
        failing: dict[str, str] = state.get("failing", {})
        latest = latest_evaluations(context.instance, keys)
        sent = 0
        for key in keys:
            evaluation = latest.get(key)
            if evaluation is None:
                continue
            name = f"{key.asset_key.to_user_string()}:{key.name}"
            now = "pass" if evaluation.passed else evaluation.severity.value
            if failing.get(name, "pass") == now:
                continue
            if now == "pass":
                failing.pop(name)
                title = f"Recovered: {name}"
            else:
                failing[name] = now
                title = f"Check {'failed' if now == 'ERROR' else 'warned'}: {name}"
            sync_alerter.send(title, [evaluation.description or ""], log=context.log)
            sent += 1
        context.update_cursor(json.dumps({"failing": failing}))
        return dg.SkipReason(f"{len(latest)} checks read, {sent} alerts sent, {len(failing)} failing")

    return _sensor
