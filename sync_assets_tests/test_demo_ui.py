"""The Quickstart's demo through `dagster dev`: the UI lists the demo assets and materializes partitions."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from sync_assets_tests.helpers import dagster_dev as start_dagster_dev

ASSET_NODES = "{ assetNodes { assetKey { path } partitionKeys groupName } }"


@pytest.fixture
def dagster_dev(tmp_path):
    with start_dagster_dev(tmp_path) as running:
        yield running


def _wait(client: DagsterGraphQLClient, run_id: str) -> DagsterRunStatus:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            return status
        time.sleep(1)
    msg = f"run {run_id} did not finish"
    raise AssertionError(msg)


def test_dagster_dev_lists_and_materializes_the_demo(dagster_dev):
    client, home, port = dagster_dev
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": ASSET_NODES}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        nodes = json.load(response)["data"]["assetNodes"]
    keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
    assert keys == {"jde/items", "jde/work_orders", "jde/item_ledger", "jde/lots"}
    assert all(n["partitionKeys"] == ["mass", "daily", "hourly"] and n["groupName"] == "jde" for n in nodes)

    for key, partition in (["jde", "lots"], "mass"), (["jde", "work_orders"], "hourly"):
        run_id = client.submit_job_execution(
            "__ASSET_JOB",
            repository_location_name="sync_assets",
            asset_selection=[key],
            tags={"dagster/partition": partition},
        )
        assert _wait(client, run_id) == DagsterRunStatus.SUCCESS, f"{key} {partition}"

    with sqlite3.connect(home / "sync_demo" / "cache.sqlite") as cache:
        assert cache.execute("SELECT count(*) FROM lots").fetchone() == (3000,)
        assert cache.execute("SELECT count(*) FROM work_orders").fetchone() == (5000,)
        log = cache.execute(
            "SELECT table_name, update_type, mode, status FROM sync_log ORDER BY id"
        ).fetchall()
    assert log == [("lots", "mass", "full", "succeeded"), ("work_orders", "hourly", "full", "succeeded")]
