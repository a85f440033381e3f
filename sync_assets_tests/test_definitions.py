"""The code location loads without databases or secrets, and exposes what users rely on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from sync_assets.assets.factory import SYNC_ALL_JOB
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
        assert node.partitions_def is not None
        assert node.partitions_def.get_partition_keys() == ["mass", "daily", "hourly"]
        assert node.group_name == "jde"
        assert node.pools == {f"sync/{key.path[-1]}"}
    job = defs.resolve_job_def(SYNC_ALL_JOB)
    assert job.partitions_def is not None
    assert set(defs.resources) == {"jde", "cache", "sync_alerter"}
    assert {s.name for s in defs.schedules} == {
        "sync_mass_0_2_x_x_0",
        "sync_daily_0_3_x_x_x",
        "sync_hourly_0_x_x_x_x",
    }


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
