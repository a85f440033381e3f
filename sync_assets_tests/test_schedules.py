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
        "sync_mass_0_2_x_x_0",
        "sync_daily_0_3_x_x_x",
        "sync_hourly_5_x_x_x_x",
        "sync_daily_30_6_x_x_1to5_europe_berlin",
        "sync_hourly_xby15_x_x_x_x",
    }
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in defs.schedules)
    # Sunday 02:00 UTC: the weekly mass of every table, lots included (mass only), invoices has no mass.
    assert _fires(defs, instance, datetime(2026, 3, 1, 2, 0, tzinfo=UTC)) == {
        "sync_mass_0_2_x_x_0": ["mass", "items", "lots", "orders"],
        "sync_hourly_xby15_x_x_x_x": ["hourly", "invoices"],
    }
    # 03:00 UTC: the shared daily; 03:05 the shared hourly; 03:15 the invoices hourly alone.
    assert _fires(defs, instance, datetime(2026, 3, 2, 3, 0, tzinfo=UTC)) == {
        "sync_daily_0_3_x_x_x": ["daily", "items", "orders"],
        "sync_hourly_xby15_x_x_x_x": ["hourly", "invoices"],
    }
    assert _fires(defs, instance, datetime(2026, 3, 2, 3, 5, tzinfo=UTC)) == {
        "sync_hourly_5_x_x_x_x": ["hourly", "items", "orders"]
    }
    # 06:30 in Berlin on a Monday is 05:30 UTC in March.
    assert _fires(defs, instance, datetime(2026, 3, 2, 5, 30, tzinfo=UTC)) == {
        "sync_daily_30_6_x_x_1to5_europe_berlin": ["daily", "invoices"],
        "sync_hourly_xby15_x_x_x_x": ["hourly", "invoices"],
    }
    assert _fires(defs, instance, datetime(2026, 3, 7, 5, 30, tzinfo=UTC)) == {
        "sync_hourly_xby15_x_x_x_x": ["hourly", "invoices"]
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
    hourly = defs.resolve_schedule_def("sync_hourly_5_x_x_x_x")
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
    daily = defs.resolve_schedule_def("sync_daily_0_3_x_x_x")
    context = dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def())
    (request,) = daily.evaluate_tick(context).run_requests
    assert sorted(k.path[-1] for k in request.asset_selection) == ["items", "orders"]
    assert SKIPPED_TAG not in request.tags


def test_freshness_policies_follow_the_fastest_schedule(defs):
    graph = defs.resolve_asset_graph()

    def windows(table: str) -> tuple[timedelta, timedelta]:
        policy = graph.get(dg.AssetKey(["erp", table])).freshness_policy
        as_delta = [
            timedelta(days=w.days, seconds=w.seconds) for w in (policy.warn_window, policy.fail_window)
        ]
        return as_delta[0], as_delta[1]

    assert windows("orders") == (timedelta(minutes=90), timedelta(hours=3))  # hourly: 1.5x / 3x
    assert windows("invoices") == (timedelta(minutes=20), timedelta(hours=1))  # set in the catalog
    assert windows("lots") == (timedelta(days=10.5), timedelta(days=21))  # weekly mass only


def test_each_scheduled_update_type_has_its_own_staleness_check(defs):
    checks = {(c.asset_key.path[-1], c.name) for c in defs.resolve_asset_graph().asset_check_keys}
    assert {("orders", "mass_fresh"), ("orders", "daily_fresh"), ("orders", "hourly_fresh")} <= checks
    assert ("lots", "mass_fresh") in checks and ("lots", "daily_fresh") not in checks


def test_staleness_sensor_flags_a_failing_daily_behind_fresh_hourlies(defs, instance):
    """Hourly successes keep Dagster's own policy green; the daily check still goes stale."""
    key = dg.AssetKey(["erp", "orders"])
    hourly = dg.AssetMaterialization(asset_key=key, partition="hourly")
    instance.report_runless_asset_event(hourly)
    sensor = defs.resolve_sensor_def(FRESHNESS_SENSOR)
    result = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
    )
    evaluations = {(e.asset_key.path[-1], e.check_name): e for e in result.asset_events}
    assert evaluations[("orders", "hourly_fresh")].passed
    daily = evaluations[("orders", "daily_fresh")]
    assert not daily.passed and daily.description == "never synced by a daily sync"
    # Unchanged states are not recorded again on the next tick.
    again = sensor.evaluate_tick(
        dg.build_sensor_context(
            instance=instance, cursor=result.cursor, repository_def=defs.get_repository_def()
        )
    )
    assert not again.asset_events


def test_staleness_warns_then_fails_with_age(defs):
    from sync_assets.assets.freshness import stalenesses

    catalog = load_catalog_text(CATALOG)
    instance = dg.DagsterInstance.ephemeral()
    key = dg.AssetKey(["erp", "orders"])
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition="daily"))
    (daily,) = [
        s for s in stalenesses(catalog, catalog.table("orders"), key) if s.update_type.value == "daily"
    ]
    stamp = (
        instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1).records[0].timestamp
    )
    assert daily.evaluate(instance, now=stamp + 3600).passed
    late = daily.evaluate(instance, now=stamp + 40 * 3600)
    assert (
        not late.passed
        and late.severity == dg.AssetCheckSeverity.WARN
        and late.description.startswith("late")
    )
    stale = daily.evaluate(instance, now=stamp + 80 * 3600)
    assert not stale.passed and stale.severity == dg.AssetCheckSeverity.ERROR


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
