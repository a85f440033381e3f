"""Alerting sensors: failed syncs, and asset checks (freshness, verification, rules) that fail.

Dagster's run-failure sensors stay silent when a non-blocking check fails, and open source
Dagster sends no freshness alerts: this sensor reads check evaluations from the event log and
reports state changes, so an alert goes out once per problem, and once more when it clears.
"""

import json

import dagster as dg

from sync_assets.resources.alerts import Alerter

ALERTER_KEY = "sync_alerter"
FAILURE_SENSOR = "sync_failure_alerts"
CHECK_SENSOR = "sync_check_alerts"
BATCH = 500


@dg.run_failure_sensor(name=FAILURE_SENSOR, default_status=dg.DefaultSensorStatus.RUNNING)
def sync_failure_alerts(context: dg.RunFailureSensorContext, sync_alerter: Alerter) -> None:
    """One alert per failed run, with each failed table's error."""
    run = context.dagster_run
    partition = run.tags.get("dagster/partition", "?")
    lines = [f"{event.step_key}: {_error_text(event)}" for event in context.get_step_failure_events()] or [
        context.failure_event.message or "run failed"
    ]
    sync_alerter.send(f"Sync failed: {run.job_name} ({partition}), run {run.run_id}", lines, log=context.log)


def _error_text(event: dg.DagsterEvent) -> str:
    error = event.step_failure_data.error if event.step_failure_data else None
    return error.message.strip() if error else "failed"


@dg.sensor(name=CHECK_SENSOR, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def sync_check_alerts(context: dg.SensorEvaluationContext, sync_alerter: Alerter) -> dg.SkipReason:
    """Alert when a check starts failing (or warning), and when it passes again."""
    cursor = json.loads(context.cursor or '{"after": null, "failing": {}}')
    failing: dict[str, str] = cursor["failing"]
    records = context.instance.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            after_cursor=cursor["after"],
        ),
        ascending=True,
        limit=BATCH,
    )
    sent = 0
    for record in records:
        cursor["after"] = record.storage_id
        evaluation = record.event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        state = "pass" if evaluation.passed else evaluation.severity.value
        if failing.get(name, "pass") == state:
            continue
        if state == "pass":
            failing.pop(name, None)
            title = f"Recovered: {name}"
        else:
            failing[name] = state
            title = f"Check {'failed' if state == 'ERROR' else 'warned'}: {name}"
        sync_alerter.send(title, [evaluation.description or ""], log=context.log)
        sent += 1
    context.update_cursor(json.dumps(cursor))
    return dg.SkipReason(f"{len(records)} check evaluations read, {sent} alerts sent")
