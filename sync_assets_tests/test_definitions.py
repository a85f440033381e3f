"""The code location loads without databases or secrets, and exposes what users rely on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from sync_assets.assets.factory import build_definitions
from sync_assets.catalog.loader import DEMO_CATALOG, load_catalog

ROOT = Path(__file__).resolve().parent.parent


def test_demo_definitions(monkeypatch):
    monkeypatch.delenv("SYNC_ASSETS_CATALOG", raising=False)
    from sync_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"jde/items", "jde/work_orders", "jde/item_ledger", "jde/lots"}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if key.path[-1] == "lots":  # no updated_at: a full reload is all it can do
            assert node.partitions_def is None
        else:
            assert node.partitions_def.get_partition_keys() == ["mass", "daily", "hourly"]
        assert node.group_name == "jde"
        assert node.pools == {f"sync/{key.path[-1]}"}
    assert set(defs.resources) == {"jde", "cache", "sync_alerter"}
    assert {s.name: s.description for s in defs.schedules} == {
        "sync_mass": "Mass sync of 4 tables at 02:00, only on Sunday (UTC), cron '0 2 * * 0': "
        "items, work_orders, item_ledger, lots",
        "sync_daily": "Daily sync of 3 tables at 03:00 (UTC), cron '0 3 * * *': items, work_orders, item_ledger",
        "sync_hourly": "Hourly sync of 3 tables every hour (UTC), cron '0 * * * *': items, work_orders, item_ledger",
    }
    # Schedules target their tables directly: no job of their own for the UI to list per asset.
    assert not [job.name for job in defs.jobs or []]


def test_the_whole_demo_syncs_its_mass_in_one_run():
    """Partitioned and mass-only (unpartitioned) tables share one run: `--select '*' --partition mass`."""
    defs = build_definitions(load_catalog(DEMO_CATALOG))
    # The demo's files go under DAGSTER_HOME, which instance_for_test points at its own temp folder.
    with dg.instance_for_test() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            partition_key="mass", instance=instance
        )
        assert result.success
        loaded = {(m.asset_key.path[-1], m.partition) for m in _materializations(result)}
        every = {"mass", "daily", "hourly"}  # a full load brings every update type up to date
        expected = {(t, p) for t in ("items", "work_orders", "item_ledger") for p in every} | {("lots", None)}
        assert loaded == expected
        # A daily of everything reloads the mass-only table, its only sync, and says so.
        daily = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            partition_key="daily", instance=instance
        )
        assert daily.success
        loaded = {(m.asset_key.path[-1], m.partition) for m in _materializations(daily)}
        assert loaded == {
            ("items", "daily"),
            ("work_orders", "daily"),
            ("item_ledger", "daily"),
            ("lots", None),
        }
        assert any(
            "lots has no `updated_at`, so this daily run reloads it in full (mass)" in (e.user_message or "")
            for e in instance.all_logs(daily.run_id)
        )


def _materializations(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    return [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]


def test_catalog_from_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text(
        DEMO_CATALOG.read_text()
        .replace("name: lots", "name: lot_master")
        .replace("[items, lots]", "[items, lot_master]")
    )
    monkeypatch.setenv("SYNC_ASSETS_CATALOG", str(path))
    assert [t.name for t in load_catalog().tables][-1] == "lot_master"


def test_workspace_validates_from_the_cli():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_HOME"))}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_instance_configs_follow_dagsters_schema():
    """Both dagster.yaml files (local and deploy/) pass Dagster's own instance-config validation."""
    from dagster._core.instance.config import dagster_instance_config

    local, _ = dagster_instance_config(str(ROOT))
    assert local["concurrency"]["pools"]["default_limit"] == 1
    deployed, _ = dagster_instance_config(str(ROOT / "deploy"))
    assert deployed["run_launcher"]["class"] == "DockerRunLauncher"
    assert deployed["concurrency"]["pools"]["default_limit"] == 1
