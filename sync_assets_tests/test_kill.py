"""SIGKILL in the middle of a mass sync, through the CLI on an instance with pools: the cache is
untouched, the table is not wedged, and the next run recovers by itself (no daemon running)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest

from sync_assets.assets.executor import WORKER_TAG
from sync_assets_tests.helpers import (
    create_source,
    grow_source,
    make_harness,
    materialize_cli,
    order_row,
    read_rows,
    staging_tables,
    sync_log_rows,
)

ROOT = Path(__file__).resolve().parent.parent
ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
BIG = 200_000


@pytest.mark.parametrize(
    ("cache_kind", "victim"),
    [("sqlite", "run"), ("postgresql", "run"), ("duckdb", "run"), ("sqlite", "step")],
)
def test_sigkill_mid_mass_sync_then_recovery(tmp_path, monkeypatch, make_database, cache_kind, victim):
    """`run`: the whole CLI process group dies (the run worker included), so nothing reports the
    run's end and its pool slot stays claimed until the next run frees it; `step`: only the
    process running the sync dies, and the run worker retries the step (the connection's retries)."""
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    create_source(source_url, [order_row(i) for i in range(1, 501)])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[ORDERS],
        defaults={"batch_size": 5000},
    )
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    grow_source(source_url, first_id=100_000, rows=BIG)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")  # pools: one sync per table

    process = materialize_cli(harness.path, home, select="src/orders", start_new_session=True)
    staged = 0
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    for line in process.stdout:
        if "rows read and staged" in line:
            staged += 1
            if staged == 3:  # well inside the load: 15,000 of 200,500 rows staged
                break
        assert time.monotonic() < deadline, "the sync never reported progress"
    assert staged == 3, "the CLI ended before the sync was under way"
    steps = psutil.Process(process.pid).children(recursive=True)
    if victim == "run":
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    else:
        (running,) = [r for r in sync_log_rows(cache_url, "orders") if r["status"] == "running"]
        os.kill(running["pid"], signal.SIGKILL)
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
        assert "STEP_UP_FOR_RETRY" in output and "ChildProcessCrashException" in output
        log = sync_log_rows(cache_url, "orders")
        assert [r["status"] for r in log] == ["succeeded", "failed", "succeeded"]
        assert log[1]["error"].startswith("abandoned")
        assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
        return
    # The step processes die with the group; wait for them too, as a DuckDB file stays locked
    # until its writer is gone.
    psutil.wait_procs(steps, timeout=30)

    assert read_rows(cache_url, "orders") == before, "a killed sync leaves the target unchanged"
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded", "running"], (
        "the killed attempt could not close its row"
    )

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (killed,) = instance.get_run_records()
        assert WORKER_TAG in killed.dagster_run.tags

    # The next run starts at once (no slot left claimed by the dead run), recovers and says why.
    recovery = materialize_cli(harness.path, home, select="src/orders")
    output, _ = recovery.communicate(timeout=300)
    assert recovery.returncode == 0, output[-3000:]
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded", "failed", "succeeded"]
    assert log[2]["rows_read"] == BIG + 500
    assert not staging_tables(cache_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = {r.dagster_run.run_id: r.dagster_run for r in instance.get_run_records()}
        dead = runs[killed.dagster_run.run_id]
        assert dead.status == dg.DagsterRunStatus.FAILURE
        assert dead.run_id not in instance.event_log_storage.get_concurrency_run_ids()
    assert log[1]["error"].startswith("abandoned")
    assert f"({killed.dagster_run.tags[WORKER_TAG]} is gone): marked failed, its pool slots freed" in output
