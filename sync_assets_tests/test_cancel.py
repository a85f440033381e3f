"""Cancellation is its own state (sync_assets issue 10): a sync interrupted by Ctrl-C, SIGTERM or
a run terminated from the UI is not retried, leaves the cache as it was, and is recorded as
`cancelled` in sync_log, never left `running`.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
import sqlalchemy as sa
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from sync_assets_tests.dagster_dev import demo_home, running_dagster_dev
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
# Retries on: before, an interrupt was turned into a retry (STEP_UP_FOR_RETRY) by the RetryPolicy.
RETRIES = {"retries": {"max_retries": 2, "delay": "0.2s", "jitter": False}}


def _home(tmp_path: Path) -> Path:
    """A persistent DAGSTER_HOME with the repository's dagster.yaml (pools of one)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def _interrupt_mid_sync(catalog: Path, home: Path, signum: int) -> str:
    """Start a mass sync through the CLI, send `signum` to its process group once the 3rd batch is
    staged (as a terminal's Ctrl-C does), and return everything the CLI printed."""
    process = materialize_cli(catalog, home, select="src/orders", start_new_session=True)
    assert process.stdout is not None
    staged, printed = 0, []
    deadline = time.monotonic() + 120
    for line in process.stdout:
        printed.append(line)
        if "rows read and staged" in line:
            staged += 1
            if staged == 3:  # well inside the load: 15,000 of 200,500 rows staged
                break
        assert time.monotonic() < deadline, "the sync never reported progress"
    assert staged == 3, "the CLI ended before the sync was under way:\n" + "".join(printed)[-3000:]
    steps = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signum)
    rest, _ = process.communicate(timeout=120)
    psutil.wait_procs(steps, timeout=60)
    return "".join(printed) + rest


def _only_run(home: Path, seen: set[str]) -> dg.DagsterRun:
    """The run of the instance under `home` that is not in `seen` (and remember it)."""
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
        ("postgresql", signal.SIGINT, 3),
        ("postgresql", signal.SIGTERM, 1),
    ],
    ids=["sqlite-sigint", "sqlite-sigterm", "postgresql-sigint", "postgresql-sigterm"],
)
def test_an_interrupted_cli_sync_is_cancelled_not_retried(
    tmp_path, monkeypatch, make_database, cache_kind, signum, times
):
    """SIGINT left the row `running` in two of three tries (a second interrupt, the group's
    SIGINT plus Dagster's forwarding, cut the recording short); SIGTERM the same. Repeated, as the
    bug was intermittent."""
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    create_source(source_url, [order_row(i) for i in range(1, 501)])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[ORDERS],
        defaults={"batch_size": 5000},
        connection=RETRIES,
    )
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    grow_source(source_url, first_id=100_000, rows=BIG)
    home, seen = _home(tmp_path), set()

    for attempt in range(1, times + 1):
        printed = _interrupt_mid_sync(harness.path, home, signum)
        assert read_rows(cache_url, "orders") == before, "a cancelled sync is unchanged:\n" + printed[-6000:]
        log = sync_log_rows(cache_url, "orders")
        assert [r["status"] for r in log] == ["succeeded"] + ["cancelled"] * attempt, printed[-4000:]
        cancelled = log[-1]
        assert cancelled["error"] in (
            "cancelled in the read phase; nothing was changed",
            "cancelled in the stage phase; nothing was changed",
        ), cancelled["error"]
        assert cancelled["finished_at"] is not None
        run, events = _only_run(home, seen)
        assert "STEP_UP_FOR_RETRY" not in events, "a cancelled sync is not retried"
        assert "STEP_FAILURE" in events
        # `dagster asset materialize` runs in the CLI process with no termination request on
        # record, so Dagster counts the interrupt as a failure of the run.
        assert run.status == DagsterRunStatus.FAILURE

    recovery = materialize_cli(harness.path, home, select="src/orders")
    output, _ = recovery.communicate(timeout=300)
    assert recovery.returncode == 0, output[-3000:]
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded"] + ["cancelled"] * times + ["succeeded"]
    assert log[-1]["rows_read"] == BIG + 500
    assert not staging_tables(cache_url)


GATE = 4242  # advisory lock key the source query waits on at row GATED_ROW
GATED_ROW = 20_000


def _gated_source(url) -> None:
    """A PostgreSQL source whose query waits, at row GATED_ROW, for an advisory lock the test
    holds: the sync is certainly mid-read (three batches staged) when the run is terminated."""
    create_source(url, [order_row(i) for i in range(1, 501)])
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (id, code, amount, qty, updated_at) SELECT i, 'G', i / 100.0, i % 7, "
                "timestamp '2026-04-01' + i * interval '1 second' FROM generate_series(501, 60000) i"
            )
        )
        conn.execute(
            sa.text(
                "CREATE FUNCTION gate(i bigint) RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN "
                f"IF i = {GATED_ROW} THEN PERFORM pg_advisory_lock_shared({GATE}); "
                f"PERFORM pg_advisory_unlock_shared({GATE}); END IF; RETURN i; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE VIEW orders_gated AS SELECT gate(id) AS id, code, name, amount, big_amount, ratio, qty, "
                "active, due, note, payload, updated_at FROM orders"
            )
        )
    engine.dispose()


def _waiting_on_the_gate(url) -> bool:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        waiting = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :gate AND NOT granted"
            ),
            {"gate": GATE},
        ).scalar_one()
    engine.dispose()
    return waiting > 0


def _until(condition, what: str, *, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.5)


def test_a_run_terminated_from_the_ui_is_cancelled_not_retried(tmp_path, monkeypatch, make_database):
    """Terminating a run was logged as STEP_UP_FOR_RETRY, the step panel kept saying "Preparing"
    and sync_log said `failed` without saying it was cancelled."""
    source_url, cache_url = make_database("postgresql"), make_database("sqlite")
    _gated_source(source_url)
    gated = {**ORDERS, "source_table": "orders_gated", "arrow_read": False}  # 5,000-row fetches
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[gated],
        defaults={"batch_size": 5000},
        connection=RETRIES,
    )
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")
    gate_engine = sa.create_engine(source_url)
    gate = gate_engine.connect()
    gate.execute(sa.text("SELECT pg_advisory_lock(:gate)"), {"gate": GATE})
    try:
        home = demo_home(tmp_path / "home")
        with running_dagster_dev(home, tmp_path / "dagster_dev.log", catalog=harness.path) as port:
            client = DagsterGraphQLClient("127.0.0.1", port_number=port)
            run_id = client.submit_job_execution(
                "__ASSET_JOB",
                repository_location_name="sync_assets",
                asset_selection=[["src", "orders"]],
                tags={"dagster/partition": "mass"},
            )
            _until(lambda: _waiting_on_the_gate(source_url), "the sync to reach the gate")
            assert [r["status"] for r in sync_log_rows(cache_url, "orders")] == ["succeeded", "running"]
            with dg.DagsterInstance.from_config(str(home)) as instance:
                staged = [e for e in instance.all_logs(run_id) if "rows read and staged" in e.user_message]
            assert len(staged) == 3, "15,000 rows staged, the 4th batch waits at the gate"

            client.terminate_run(run_id)
            _until(
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
    finally:
        gate.close()
        gate_engine.dispose()  # the session ends, and its advisory lock with it
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
