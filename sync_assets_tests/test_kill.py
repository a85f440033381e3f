"""SIGKILL in the middle of a mass sync, through the CLI on an instance with pools: the cache is
untouched, the table is not wedged, and the next run recovers by itself (no daemon running)."""

from __future__ import annotations

import os
import signal

import dagster as dg
import psutil
import pytest

from sync_assets.assets.executor import WORKER_TAG
from sync_assets_tests.dagster_dev import demo_home
from sync_assets_tests.gate import (
    GATED_DEFAULTS,
    GATED_TABLE,
    LAST_ID,
    Gate,
    create_gated_source,
    grow_gated_source,
    materialize_to_the_gate,
)
from sync_assets_tests.helpers import (
    make_harness,
    materialize_cli,
    read_rows,
    staging_tables,
    sync_log_rows,
)


@pytest.mark.parametrize(
    ("cache_kind", "victim"),
    [("sqlite", "run"), ("postgresql", "run"), ("duckdb", "run"), ("sqlite", "step")],
)
def test_sigkill_mid_mass_sync_then_recovery(tmp_path, monkeypatch, make_database, cache_kind, victim):
    """`run`: the whole CLI process group dies (the run worker included), so nothing reports the
    run's end and its pool slot stays claimed until the next run frees it; `step`: only the
    process running the sync dies, and the run worker retries the step (the connection's retries):
    that needs a step process, which a run of one table has only with `single_table_in_process`
    off. The source's read waits at a gate when the kill comes, so the kill certainly lands mid-read."""
    source_url, cache_url = make_database("postgresql"), make_database(cache_kind)
    create_gated_source(source_url)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[GATED_TABLE],
        defaults=GATED_DEFAULTS,
        extra={"execution": {"single_table_in_process": victim == "run"}},
    )
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    grow_gated_source(source_url)
    home = demo_home(tmp_path / "dagster_home")  # the repo's dagster.yaml: pools, one sync per table

    output_path = tmp_path / "cli.log"
    with Gate(source_url) as gate:
        process = materialize_to_the_gate(harness.path, home, gate, output_path)
        steps = psutil.Process(process.pid).children(recursive=True)
        if victim == "step":
            (running,) = [r for r in sync_log_rows(cache_url, "orders") if r["status"] == "running"]
            os.kill(running["pid"], signal.SIGKILL)
            gate.release()  # the retry of the step reads through the gate
            process.wait(timeout=300)  # the run worker retries the step
            output = output_path.read_text()
            assert process.returncode == 0, output[-3000:]
            assert "STEP_UP_FOR_RETRY" in output and "ChildProcessCrashException" in output
            log = sync_log_rows(cache_url, "orders")
            assert [r["status"] for r in log] == ["succeeded", "failed", "succeeded"]
            assert log[1]["error"].startswith("abandoned")
            assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
            return
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert "Executing steps in process" in output_path.read_text(), (
            "a run of one table has no step process"
        )
        # The step processes die with the group; wait for them too, as a DuckDB file stays locked
        # until its writer is gone. Then the gate opens, and the killed read's server query ends.
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
    assert log[2]["rows_read"] == LAST_ID
    assert not staging_tables(cache_url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = {r.dagster_run.run_id: r.dagster_run for r in instance.get_run_records()}
        dead = runs[killed.dagster_run.run_id]
        assert dead.status == dg.DagsterRunStatus.FAILURE
        assert dead.run_id not in instance.event_log_storage.get_concurrency_run_ids()
    assert log[1]["error"].startswith("abandoned")
    assert f"({killed.dagster_run.tags[WORKER_TAG]} is gone): marked failed, its pool slots freed" in output
