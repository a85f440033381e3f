"""Schedules, freshness policies and per-update-type staleness, built from the catalog."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from croniter import croniter

from sync_assets.assets.factory import build_definitions
from sync_assets.assets.freshness import FRESHNESS_SENSOR
from sync_assets.assets.schedules import SKIPPED_TAG
from sync_assets.catalog.loader import load_catalog
from sync_assets.errors import CatalogError
from sync_assets_tests.helpers import start_schedule

CATALOG = """\
connections:
  erp: {url: "${ERP_URL}", max_parallel: 2}
  cache: {url: "sqlite:///cache.sqlite"}
cache: cache
defaults:
  schedules: {mass: "0 2 * * 0", daily: "0 3 * * *", hourly: "5 * * * *"}
tables:
  - {name: orders, source: erp, source_table: orders, primary_key: [id], updated_at: changed}
  - {name: items, source: erp, source_table: items, primary_key: [id], updated_at: changed}
  - name: invoices
    source: erp
    source_table: invoices
    primary_key: [id]
    updated_at: changed
    schedules:
      daily: {cron: "30 6 * * 1-5", timezone: Europe/Berlin}
      hourly: "*/15 * * * *"
    freshness: {warn_after: 20m, fail_after: 1h}
  - {name: lots, source: erp, source_table: lots, primary_key: [lot]}
"""


@pytest.fixture
def instance():
    """A real (temporary, on-disk) instance: schedule contexts need one they can reference."""
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def defs(tmp_path) -> dg.Definitions:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return build_definitions(load_catalog(path))


def _fires(defs: dg.Definitions, instance: dg.DagsterInstance, when: datetime) -> dict[str, list[str]]:
    """Which schedules are due at `when`, and the partition and tables each one launches."""
    due = {}
    for schedule in defs.schedules:
        local = when.astimezone(ZoneInfo(schedule.execution_timezone or "UTC"))
        if not croniter.match(schedule.cron_schedule, local):
            continue
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=when,
            repository_def=defs.get_repository_def(),
        )
        (request,) = schedule.evaluate_tick(context).run_requests
        tables = sorted(k.path[-1] for k in request.asset_selection)
        due[schedule.name] = [request.partition_key, *tables]
    return due


def test_schedules_launch_the_right_partition_and_tables(defs, instance):
    assert {s.name for s in defs.schedules} == {
        "sync_mass",
        "sync_daily",
        "sync_hourly",
        "sync_daily_at_06_30_monday_through_friday_europe_berlin",
        "sync_hourly_every_15_minutes",
    }
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in defs.schedules)
    # Sunday 02:00 UTC: the weekly mass of every table, lots included (mass only), invoices has no mass.
    assert _fires(defs, instance, datetime(2026, 3, 1, 2, 0, tzinfo=UTC)) == {
        "sync_mass": ["mass", "items", "lots", "orders"],
        "sync_hourly_every_15_minutes": ["hourly", "invoices"],
    }
    # 03:00 UTC: the shared daily; 03:05 the shared hourly; 03:15 the invoices hourly alone.
    assert _fires(defs, instance, datetime(2026, 3, 2, 3, 0, tzinfo=UTC)) == {
        "sync_daily": ["daily", "items", "orders"],
        "sync_hourly_every_15_minutes": ["hourly", "invoices"],
    }
    assert _fires(defs, instance, datetime(2026, 3, 2, 3, 5, tzinfo=UTC)) == {
        "sync_hourly": ["hourly", "items", "orders"]
    }
    # 06:30 in Berlin on a Monday is 05:30 UTC in March.
    assert _fires(defs, instance, datetime(2026, 3, 2, 5, 30, tzinfo=UTC)) == {
        "sync_daily_at_06_30_monday_through_friday_europe_berlin": ["daily", "invoices"],
        "sync_hourly_every_15_minutes": ["hourly", "invoices"],
    }
    assert _fires(defs, instance, datetime(2026, 3, 7, 5, 30, tzinfo=UTC)) == {
        "sync_hourly_every_15_minutes": ["hourly", "invoices"]
    }


def _running(
    instance: dg.DagsterInstance, partition: str, tables: list[str], status=dg.DagsterRunStatus.STARTED
) -> str:
    """Record a run in the instance as the launcher would: its partition, tables and status."""
    record = dg.DagsterRun(
        job_name="__ASSET_JOB",
        run_id=f"run-{partition}-{'-'.join(tables)}",
        status=status,
        tags={"dagster/partition": partition},
        asset_selection=frozenset(dg.AssetKey(["erp", t]) for t in tables),
    )
    instance.add_run(record)
    return record.run_id


def test_a_sync_due_while_a_higher_priority_one_runs_is_skipped(defs, instance):
    hourly = defs.resolve_schedule_def("sync_hourly")
    context = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=datetime(2026, 3, 2, 3, 5, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    _running(instance, "mass", ["orders"])
    (request,) = hourly.evaluate_tick(context).run_requests
    assert [k.path[-1] for k in request.asset_selection] == ["items"]
    assert "erp/orders (mass run run-mass started)" in request.tags[SKIPPED_TAG]

    _running(instance, "daily", ["items"], status=dg.DagsterRunStatus.STARTING)
    result = hourly.evaluate_tick(context)
    assert not result.run_requests
    assert "already being synced" in result.skip_message
    assert "erp/items (daily run run-dail starting)" in result.skip_message

    # A lower-priority run does not block a higher one: the daily still runs for both tables.
    for run_id in ("run-mass-orders", "run-daily-items"):
        instance.delete_run(run_id)
    _running(instance, "hourly", ["orders", "items"])
    daily = defs.resolve_schedule_def("sync_daily")
    context = dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def())
    (request,) = daily.evaluate_tick(context).run_requests
    assert sorted(k.path[-1] for k in request.asset_selection) == ["items", "orders"]
    assert SKIPPED_TAG not in request.tags


def test_only_a_stated_freshness_policy_reaches_dagster(defs):
    """Dagster's freshness daemon counts time whether or not a schedule runs: a policy derived from
    stopped schedules would flag every table, so only the catalog's own `freshness:` is set."""
    graph = defs.resolve_asset_graph()
    policy = graph.get(dg.AssetKey(["erp", "invoices"])).freshness_policy
    windows = [timedelta(days=w.days, seconds=w.seconds) for w in (policy.warn_window, policy.fail_window)]
    assert windows == [timedelta(minutes=20), timedelta(hours=1)]
    assert graph.get(dg.AssetKey(["erp", "orders"])).freshness_policy is None
    assert graph.get(dg.AssetKey(["erp", "lots"])).freshness_policy is None


def test_a_schedule_says_what_it_syncs_and_when(defs):
    descriptions = {s.name: s.description for s in defs.schedules}
    assert descriptions["sync_daily_at_06_30_monday_through_friday_europe_berlin"] == (
        "Daily sync of 1 table at 06:30, Monday through Friday (Europe/Berlin), cron '30 6 * * 1-5': invoices"
    )
    assert descriptions["sync_mass"] == (
        "Mass sync of 3 tables at 02:00, only on Sunday (UTC), cron '0 2 * * 0': orders, items, lots"
    )


def test_each_scheduled_update_type_has_its_own_staleness_check(defs):
    checks = {(c.asset_key.path[-1], c.name) for c in defs.resolve_asset_graph().asset_check_keys}
    assert {("orders", "mass_fresh"), ("orders", "daily_fresh"), ("orders", "hourly_fresh")} <= checks
    assert ("lots", "mass_fresh") in checks and ("lots", "daily_fresh") not in checks


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def(FRESHNESS_SENSOR)
    result = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=defs.get_repository_def())
    )
    for event in result.asset_events:  # recorded, as the daemon does
        instance.report_runless_asset_event(event)
    return result


def test_stopped_schedules_raise_no_staleness(defs, instance):
    """A catalog just deployed: nothing synced, every schedule stopped, no warning anywhere."""
    first = _tick(defs, instance)
    evaluations = {(e.asset_key.path[-1], e.check_name): e for e in first.asset_events}
    assert evaluations, "the first tick records every staleness check once"
    assert all(e.passed for e in evaluations.values())
    assert evaluations[("orders", "daily_fresh")].description == "not scheduled: sync_daily is stopped"
    assert not _tick(defs, instance, first.cursor).asset_events, "unchanged states are not recorded again"


def test_staleness_counts_from_the_first_due_tick_of_a_running_schedule(defs, instance):
    """Hourly successes keep Dagster's own policy green; the daily check still goes stale, but only
    once the daily schedule runs and its first tick is overdue."""
    key = dg.AssetKey(["erp", "orders"])
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition="hourly"))
    now = datetime.now(UTC)
    start_schedule(instance, defs, "sync_daily", now - timedelta(days=4))  # first due 3 to 4 days ago
    # Started as of half an hour ahead, not now: an hh:05 tick between this start and the sensor's
    # evaluation would make the first tick a past one. Its first tick is then certainly to come.
    start_schedule(instance, defs, "sync_hourly", now + timedelta(minutes=30))
    first = _tick(defs, instance)
    evaluations = {(e.asset_key.path[-1], e.check_name): e for e in first.asset_events}
    daily = evaluations[("orders", "daily_fresh")]
    assert not daily.passed and daily.severity == dg.AssetCheckSeverity.ERROR
    assert daily.description.startswith("stale: no successful daily sync since sync_daily was first due")
    hourly = evaluations[("orders", "hourly_fresh")]
    assert hourly.passed and "the first hourly sync is due" in hourly.description
    assert evaluations[("orders", "mass_fresh")].description == "not scheduled: sync_mass is stopped"
    # The next tick records nothing new; a daily success turns the check green once.
    assert not _tick(defs, instance, first.cursor).asset_events
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition="daily"))
    (fresh,) = [e for e in _tick(defs, instance).asset_events if e.asset_key == key]
    assert (
        fresh.check_name == "daily_fresh"
        and fresh.passed
        and fresh.description.startswith("fresh: last daily")
    )


def test_staleness_warns_then_fails_with_age():
    from sync_assets.assets.freshness import Freshness, ScheduleState, assess
    from sync_assets.assets.schedules import schedule_groups

    catalog = load_catalog_text(CATALOG)
    daily = next(g for g in schedule_groups(catalog) if g.name == "sync_daily")  # 03:00 UTC
    started = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()  # first due 2026-03-03 03:00
    running = ScheduleState(running=True, started_at=started)
    warn, fail = timedelta(hours=36), timedelta(hours=72)

    def state(last: float | None, hours_after_start: float) -> Freshness:
        now = started + hours_after_start * 3600
        return assess(daily, warn, fail, last_success=last, schedule=running, now=now).state

    assert state(None, 10) is Freshness.NOT_DUE
    assert state(None, 15 + 35) is Freshness.FRESH  # 35 h after the first due tick
    assert state(None, 15 + 37) is Freshness.LATE
    assert state(None, 15 + 73) is Freshness.STALE
    last = started + 20 * 3600  # a success after the first tick restarts the count
    assert state(last, 20 + 35) is Freshness.FRESH and state(last, 20 + 37) is Freshness.LATE
    old = started - 100 * 3600  # a success before the schedule started counts from its first tick
    assert state(old, 15 + 35) is Freshness.FRESH
    stopped = assess(daily, warn, fail, last_success=None, schedule=ScheduleState(False), now=started)
    assert stopped.passed and stopped.state is Freshness.NOT_SCHEDULED
    # Running, but no start time on record (older instigator states): counted from the last success.
    since_ever = ScheduleState(running=True, started_at=None)
    assert (
        assess(daily, warn, fail, last_success=None, schedule=since_ever, now=started).state
        is Freshness.STALE
    )
    recent = assess(daily, warn, fail, last_success=started - 3600, schedule=since_ever, now=started)
    assert recent.state is Freshness.FRESH


def load_catalog_text(text: str):
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "catalog.yaml"
        path.write_text(textwrap.dedent(text))
        return load_catalog(path)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "- {name: lots, source: erp, source_table: lots, primary_key: [lot]}",
            '- {name: lots, source: erp, source_table: lots, primary_key: [lot], schedules: {daily: "0 1 * * *"}}',
            "can only be scheduled for mass",
        ),
        ('hourly: "*/15 * * * *"', 'hourly: "every 15 minutes"', "is not a five-field cron expression"),
        ("timezone: Europe/Berlin", "timezone: Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        (
            "freshness: {warn_after: 20m, fail_after: 1h}",
            "freshness: {warn_after: 2h, fail_after: 1h}",
            "`warn_after` must be shorter",
        ),
    ],
)
def test_schedule_mistakes_are_catalog_errors(tmp_path, old, new, expected):
    assert old in CATALOG
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG.replace(old, new))
    with pytest.raises(CatalogError, match=expected):
        load_catalog(path)
