"""The alert sensors and the staleness sensor, tick after tick, on the instances users run.

Each sensor is evaluated repeatedly with the cursor it returned, against a persistent instance
(the repo's dagster.yaml: run-sharded SQLite storage; and dagster-postgres storage), and alerts
go to a local webhook: one alert when something starts failing, one when it recovers, no repeats.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_assets.assets.alerts import CHECK_SENSOR, FAILURE_SENSOR
from sync_assets.assets.freshness import FRESHNESS_SENSOR
from sync_assets_tests.helpers import create_source, make_harness, order_row, start_schedule, upsert_source

ORDERS = {
    "name": "orders",
    "source_table": "orders",
    "primary_key": ["id"],
    "updated_at": "updated_at",
    # A warn rule fails the moment the source sends a row coded 'BAD'.
    "checks": [
        {"sql": "SELECT * FROM {table} WHERE code = 'BAD'", "name": "no_bad_codes", "severity": "warn"}
    ],
}
ITEMS = {"name": "items", "source_table": "items", "primary_key": ["id"], "updated_at": "updated_at"}
BROKEN = {"name": "broken", "source_table": "missing", "primary_key": ["id"]}


class Sensors:
    """The three sensors of one code location, each ticking with the cursor it last returned."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs, self.instance = defs, instance
        self.cursors: dict[str, str | None] = {}
        self.ticks = 0

    def tick(self, name: str) -> dg.SensorExecutionData:
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            repository_def=self.defs.get_repository_def(),
            resources={"sync_alerter": self.defs.resources["sync_alerter"]},
        )
        result = sensor.evaluate_tick(context)
        for event in result.asset_events:  # recorded as the daemon records them
            self.instance.report_runless_asset_event(event)
        self.cursors[name] = result.cursor
        self.ticks += 1
        return result

    def all(self) -> None:
        for name in (FRESHNESS_SENSOR, FAILURE_SENSOR, CHECK_SENSOR):
            self.tick(name)


@pytest.mark.parametrize("instance_kind", ["sqlite", "postgresql"])
def test_alerts_fire_once_and_recover_once_tick_after_tick(
    tmp_path, monkeypatch, make_database, make_instance, webhook, instance_kind
):
    url, received = webhook
    monkeypatch.setenv("SYNC_TEST_WEBHOOK", url)
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 21)])
    create_source(source_url, [order_row(i) for i in range(1, 6)], name="items")
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[ORDERS, ITEMS, BROKEN],
        defaults={"schedules": {"daily": "0 3 * * *"}},
        extra={"alerts": {"webhook_url": "${SYNC_TEST_WEBHOOK}"}},
    )
    harness.instance = make_instance(instance_kind)
    defs = harness.defs
    sensors = Sensors(defs, harness.instance)

    def titles() -> list[str]:
        return [r["title"] for r in received]

    # Deployed, nothing synced, schedules stopped: three rounds of ticks, no alert.
    for _ in range(3):
        sensors.all()
    assert titles() == []

    # A failed sync: one alert naming the table's error, not repeated on later ticks.
    assert harness.sync("orders", "mass").success
    assert not harness.sync("broken", "mass").success
    for _ in range(3):
        sensors.all()
    assert titles() == [f"Sync failed (mass): broken, run {_failed_run(harness.instance, 'broken')}"]
    assert "broken: table 'broken': source table missing does not exist" in received[0]["text"]
    assert "Failure" not in received[0]["text"]

    # A check that starts failing (a warn rule), then recovers after the next sync.
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE orders SET code = 'BAD', updated_at = '2026-03-02 00:00:00' WHERE id = 3")
        )
    assert harness.sync("orders", "daily").success
    sensors.all()
    sensors.all()
    assert titles()[1:] == ["Check warned: src/orders:no_bad_codes"]
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE orders SET code = 'OK', updated_at = '2026-03-02 00:00:01' WHERE id = 3")
        )
    engine.dispose()
    assert harness.sync("orders", "daily").success
    sensors.all()
    sensors.all()
    assert titles()[2:] == ["Recovered: src/orders:no_bad_codes"]

    # The daily schedule runs (started 4 days ago): `items` never synced, so its staleness check
    # fails, once; `orders` synced since the schedule's first tick, so it stays quiet.
    start_schedule(harness.instance, defs, "sync_daily", datetime.now(UTC) - timedelta(days=4))
    sensors.all()
    sensors.all()
    assert titles()[3:] == ["Check failed: src/items:daily_fresh"]
    assert "stale: no successful daily sync since sync_daily was first due" in received[3]["text"]
    assert harness.sync("items", "daily").success  # the sync's own step records it fresh again
    sensors.all()
    sensors.all()
    assert titles()[4:] == ["Recovered: src/items:daily_fresh"]

    # The failed table recovers: one message, then silence.
    with sa.create_engine(source_url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE missing (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(sa.text("INSERT INTO missing VALUES (1, 'one')"))
    assert harness.sync("broken", "mass").success
    for _ in range(3):
        sensors.all()
    assert titles()[5:] == ["Recovered: src/broken:mass"]


@pytest.mark.parametrize("instance_kind", ["sqlite", "postgresql"])
def test_a_check_failing_before_the_first_tick_is_reported_once(
    tmp_path, monkeypatch, make_database, make_instance, webhook, instance_kind
):
    url, received = webhook
    monkeypatch.setenv("SYNC_TEST_WEBHOOK", url)
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [{**order_row(i), "code": "BAD"} for i in range(1, 4)])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[ORDERS],
        extra={"alerts": {"webhook_url": "${SYNC_TEST_WEBHOOK}"}},
    )
    harness.instance = make_instance(instance_kind)
    assert harness.sync("orders", "mass").success  # the rule fails in the sync's own step
    sensors = Sensors(harness.defs, harness.instance)
    for _ in range(3):
        sensors.tick(CHECK_SENSOR)
    assert [r["title"] for r in received] == ["Check warned: src/orders:no_bad_codes"]


@pytest.mark.parametrize("instance_kind", ["sqlite", "postgresql"])
def test_a_run_failure_recorded_late_is_still_reported(
    tmp_path, monkeypatch, make_database, make_instance, webhook, instance_kind
):
    """A run whose failure is stamped earlier than runs the sensor has already read (the process
    that failed it was slow to commit, as on a loaded machine) and re-tagged after (the retry
    daemon does): reported once all the same. One run end per read, so that ticks page through."""
    monkeypatch.setattr("sync_assets.assets.alerts.RUNS_PER_TICK", 1)
    url, received = webhook
    monkeypatch.setenv("SYNC_TEST_WEBHOOK", url)
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 6)])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[ORDERS, BROKEN],
        extra={"alerts": {"webhook_url": "${SYNC_TEST_WEBHOOK}"}},
    )
    instance = harness.instance = make_instance(instance_kind)
    sensors = Sensors(harness.defs, instance)
    sensors.tick(FAILURE_SENSOR)
    assert harness.sync("orders", "mass").success
    sensors.tick(FAILURE_SENSOR)  # has read a run that ended now

    crashed = dg.DagsterRun(
        job_name="__ASSET_JOB",
        run_id="crashed",
        status=dg.DagsterRunStatus.STARTED,
        asset_selection=frozenset({dg.AssetKey(["src", "broken"])}),
        tags={"dagster/partition": "mass"},
    )
    instance.add_run(crashed)
    instance.report_dagster_event(
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_FAILURE.value,
            job_name=crashed.job_name,
            message="Run execution process for crashed was terminated by signal 9 (SIGKILL).",
        ),
        run_id=crashed.run_id,
        timestamp=(datetime.now(UTC) - timedelta(minutes=10)).timestamp(),
    )
    assert instance.get_run_by_id("crashed").status == dg.DagsterRunStatus.FAILURE
    instance.add_run_tags("crashed", {"dagster/will_retry": "false"})
    assert not harness.sync("broken", "mass").success  # failing still: no second alert
    with sa.create_engine(source_url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE missing (id INTEGER PRIMARY KEY, name TEXT)"))
    recovery = harness.sync("broken", "mass")
    assert recovery.success
    for _ in range(4):
        sensors.tick(FAILURE_SENSOR)
    assert [r["title"] for r in received] == [
        "Sync failed (mass): broken, run crashed",
        "Recovered: src/broken:mass",
    ]
    assert "terminated by signal 9" in received[0]["text"]
    assert f"synced by run {recovery.run_id}; failing since run crashed" in received[1]["text"]


def _failed_run(instance: dg.DagsterInstance, table: str) -> str:
    """The id of the one failed run that synced `table`."""
    key = dg.AssetKey(["src", table])
    failed = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    (run_id,) = [r.dagster_run.run_id for r in failed if key in (r.dagster_run.asset_selection or ())]
    return run_id


def test_a_blocking_check_failing_after_the_load_is_a_failed_sync_not_a_recovery(
    tmp_path, monkeypatch, make_database, make_instance, webhook
):
    """The rows were loaded (materialized), then an error-severity rule failed the step: one
    failure alert, no recovery until a sync passes it."""
    url, received = webhook
    monkeypatch.setenv("SYNC_TEST_WEBHOOK", url)
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    source = create_source(source_url, [order_row(i) for i in range(2, 6)])
    guarded = {**ORDERS, "checks": [{"sql": "SELECT * FROM {table} WHERE id = 1", "name": "no_first"}]}
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[guarded],
        extra={"alerts": {"webhook_url": "${SYNC_TEST_WEBHOOK}"}},
    )
    harness.instance = make_instance("sqlite")
    sensors = Sensors(harness.defs, harness.instance)
    sensors.tick(FAILURE_SENSOR)
    assert harness.sync("orders", "mass").success
    upsert_source(source_url, source, [order_row(1, updated_at=datetime(2026, 3, 2))])  # breaks the rule
    failed = harness.sync("orders", "daily")
    assert not failed.success and _materialized(failed)
    for _ in range(3):
        sensors.tick(FAILURE_SENSOR)
    assert [r["title"] for r in received] == [f"Sync failed (daily): orders, run {failed.run_id}"]
    assert "blocking" in received[0]["text"]
    with sa.create_engine(source_url).begin() as conn:
        conn.execute(sa.text("DELETE FROM orders WHERE id = 1"))
    with sa.create_engine(cache_url).begin() as conn:  # rows deleted at the source stay cached
        conn.execute(sa.text("DELETE FROM orders WHERE id = 1"))
    assert harness.sync("orders", "daily").success
    sensors.tick(FAILURE_SENSOR)
    sensors.tick(FAILURE_SENSOR)
    assert [r["title"] for r in received][1:] == ["Recovered: src/orders:daily"]


def _materialized(result: dg.ExecuteInProcessResult) -> bool:
    return bool(result.get_asset_materialization_events())


def test_the_staleness_sensor_leaves_a_check_a_run_is_evaluating_to_that_run(
    tmp_path, monkeypatch, make_database, make_instance
):
    """While a sync's step has a staleness check planned, the sensor records nothing over it (its
    row would hide the run's own result); once that run ended without a result, the sensor does."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned

    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[ITEMS],
        defaults={"schedules": {"daily": "0 3 * * *"}},
    )
    instance = harness.instance = make_instance("sqlite")
    key = dg.AssetKey(["src", "items"])
    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id="in-progress", status=dg.DagsterRunStatus.STARTED)
    instance.add_run(run)
    instance.report_dagster_event(
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
            job_name=run.job_name,
            event_specific_data=AssetCheckEvaluationPlanned(asset_key=key, check_name="daily_fresh"),
        ),
        run_id=run.run_id,
    )
    sensors = Sensors(harness.defs, instance)
    assert not sensors.tick(FRESHNESS_SENSOR).asset_events, "the run will record it"
    instance.report_run_failed(run)
    (recorded,) = sensors.tick(FRESHNESS_SENSOR).asset_events
    assert (recorded.check_name, recorded.passed) == ("daily_fresh", True)
    assert not sensors.tick(FRESHNESS_SENSOR).asset_events
