"""Cancellation is its own state (sync_assets issue 10): a sync interrupted by Ctrl-C, SIGTERM or
a run terminated from the UI is not retried, leaves the cache as it was, and is recorded as
`cancelled` in sync_log, never left `running`.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from sync_assets.assets.alerts import FAILURE_SENSOR
from sync_assets_tests.dagster_dev import demo_home, running_dagster_dev
from sync_assets_tests.gate import (
    GATED_DEFAULTS,
    GATED_TABLE,
    LAST_ID,
    STAGED_AT_THE_GATE,
    Gate,
    create_gated_source,
    grow_gated_source,
    materialize_to_the_gate,
    staged_batches,
)
from sync_assets_tests.helpers import (
    Harness,
    make_harness,
    materialize_cli,
    read_rows,
    staging_tables,
    sync_log_rows,
    wait_until,
)

# Retries on: before, an interrupt was turned into a retry (STEP_UP_FOR_RETRY) by the RetryPolicy.
RETRIES = {"retries": {"max_retries": 2, "delay": "0.2s", "jitter": False}}


def _interrupt_at_the_gate(catalog: Path, home: Path, gate: Gate, signum: int, output: Path) -> str:
    """Start a mass sync through the CLI and, once it waits at the gate (three batches staged),
    send `signum` to its process group (as a terminal's Ctrl-C does); return everything the CLI
    printed. The gate is held meanwhile, so the signal certainly lands mid-read."""
    process = materialize_to_the_gate(catalog, home, gate, output)
    steps = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signum)
    process.wait(timeout=120)
    psutil.wait_procs(steps, timeout=60)
    return output.read_text()


def _only_run(home: Path, seen: set[str]) -> tuple[dg.DagsterRun, list[str]]:
    """The run of the instance under `home` that is not in `seen` (and remember it), and the
    types of its events."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = [r for r in instance.get_runs() if r.run_id not in seen]
        events = [e.dagster_event.event_type_value for e in instance.all_logs(run.run_id) if e.dagster_event]
    seen.add(run.run_id)
    return run, events


@pytest.mark.parametrize(
    ("cache_kind", "signum", "times"),
    [
        ("sqlite", signal.SIGINT, 3),
        ("sqlite", signal.SIGTERM, 1),
        ("postgresql", signal.SIGINT, 1),
        ("postgresql", signal.SIGTERM, 1),
    ],
    ids=["sqlite-sigint", "sqlite-sigterm", "postgresql-sigint", "postgresql-sigterm"],
)
def test_an_interrupted_cli_sync_is_cancelled_not_retried(
    tmp_path, monkeypatch, make_database, webhook, cache_kind, signum, times
):
    """SIGINT left the row `running` in two of three tries (a second interrupt, the group's
    SIGINT plus Dagster's forwarding, cut the recording short); SIGTERM the same. Repeated (on one
    cache), as the bug was intermittent."""
    source_url, cache_url = make_database("postgresql"), make_database(cache_kind)
    create_gated_source(source_url)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[GATED_TABLE],
        defaults=GATED_DEFAULTS,
        connection=RETRIES,
        extra={"alerts": {"webhook_url": "${SYNC_TEST_WEBHOOK}"}},
    )
    url, alerts = webhook
    monkeypatch.setenv("SYNC_TEST_WEBHOOK", url)
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    grow_gated_source(source_url)
    home, seen = demo_home(tmp_path / "dagster_home"), set()
    cursor = _failure_alerts(harness, home, cursor=None)  # watching from here on

    for attempt in range(1, times + 1):
        with Gate(source_url) as gate:  # released once the CLI and its steps are gone
            printed = _interrupt_at_the_gate(
                harness.path, home, gate, signum, tmp_path / f"cli_{attempt}.log"
            )
        assert read_rows(cache_url, "orders") == before, "a cancelled sync is unchanged:\n" + printed[-6000:]
        log = sync_log_rows(cache_url, "orders")
        assert [r["status"] for r in log] == ["succeeded"] + ["cancelled"] * attempt, printed[-4000:]
        cancelled = log[-1]
        assert cancelled["error"] == "cancelled in the read phase; nothing was changed", cancelled["error"]
        assert cancelled["finished_at"] is not None
        run, events = _only_run(home, seen)
        assert "STEP_UP_FOR_RETRY" not in events, "a cancelled sync is not retried"
        assert "STEP_FAILURE" in events
        # `dagster asset materialize` runs in the CLI process with no termination request on
        # record, so Dagster counts the interrupt as a failure of the run.
        assert run.status == DagsterRunStatus.FAILURE

    _failure_alerts(harness, home, cursor=cursor)
    assert alerts == [], "a cancelled sync is not a failed one: no alert"

    recovery = materialize_cli(harness.path, home, select="src/orders")
    output, _ = recovery.communicate(timeout=300)
    assert recovery.returncode == 0, output[-3000:]
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded"] + ["cancelled"] * times + ["succeeded"]
    assert log[-1]["rows_read"] == LAST_ID
    assert not staging_tables(cache_url)


def _failure_alerts(harness: Harness, home: Path, *, cursor: str | None) -> str | None:
    """One tick of the failure-alert sensor on the instance under `home`; its new cursor."""
    defs = harness.defs
    with dg.DagsterInstance.from_config(str(home)) as instance:
        context = dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            repository_def=defs.get_repository_def(),
            resources={"sync_alerter": defs.resources["sync_alerter"]},
        )
        return defs.resolve_sensor_def(FAILURE_SENSOR).evaluate_tick(context).cursor


def test_a_run_terminated_from_the_ui_is_cancelled_not_retried(tmp_path, monkeypatch, make_database):
    """Terminating a run was logged as STEP_UP_FOR_RETRY, the step panel kept saying "Preparing"
    and sync_log said `failed` without saying it was cancelled."""
    source_url, cache_url = make_database("postgresql"), make_database("sqlite")
    create_gated_source(source_url)
    grow_gated_source(source_url)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[GATED_TABLE],
        defaults=GATED_DEFAULTS,
        connection=RETRIES,
    )
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    with Gate(source_url) as gate:  # the session ends at the block's end, and its advisory lock with it
        home = demo_home(tmp_path / "home")
        with running_dagster_dev(home, tmp_path / "dagster_dev.log", catalog=harness.path) as port:
            client = DagsterGraphQLClient("127.0.0.1", port_number=port)
            run_id = client.submit_job_execution(
                "__ASSET_JOB",
                repository_location_name="sync_assets",
                asset_selection=[["src", "orders"]],
                tags={"dagster/partition": "mass"},
            )
            wait_until(gate.waited_on, "the sync to reach the gate")
            assert [r["status"] for r in sync_log_rows(cache_url, "orders")] == ["succeeded", "running"]
            assert staged_batches(home, run_id) == STAGED_AT_THE_GATE, (
                "15,000 rows staged, the 4th batch waits"
            )

            client.terminate_run(run_id)
            wait_until(
                lambda: (
                    client.get_run_status(run_id) in (DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE)
                ),
                "the run to end",
            )
            assert client.get_run_status(run_id) == DagsterRunStatus.CANCELED
            with dg.DagsterInstance.from_config(str(home)) as instance:
                events = [
                    e.dagster_event.event_type_value for e in instance.all_logs(run_id) if e.dagster_event
                ]
                failure = next(
                    e.dagster_event.step_failure_data.error.message
                    for e in instance.all_logs(run_id)
                    if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
                )
    assert "STEP_UP_FOR_RETRY" not in events, "a terminated run is not retried"
    assert "table 'orders' (mass): cancelled in the read phase; nothing was changed" in failure
    assert read_rows(cache_url, "orders") == before, "a cancelled sync leaves the target unchanged"
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded", "cancelled"]
    assert log[-1]["error"] == "cancelled in the read phase; nothing was changed"
    assert harness.sync("orders", "mass").success, "the gate is open again: the next sync succeeds"
    assert [r["status"] for r in sync_log_rows(cache_url, "orders")] == [
        "succeeded",
        "cancelled",
        "succeeded",
    ]
