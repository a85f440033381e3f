"""The production instance for real: deploy/dagster.yaml on PostgreSQL, as separate processes.

A gRPC code server, `dagster-daemon run` and `dagster-webserver` (both loading the location from
that server, as deploy/workspace.yaml does) run on deploy/dagster.yaml, changed only where this
machine must differ (`production_config`). One set of processes serves every scenario: a started
schedule ticks, the queued coordinator and the table pools keep two runs of a table apart, the
failure sensor posts its alert, and a run whose worker is killed is failed, retried and its pool
slot freed. Locks the test holds on a source file keep a sync in progress for as long as a
scenario needs; every wait polls for what must happen, under a generous deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import psutil
import pytest
import sqlalchemy as sa
import yaml
from dagster._grpc.client import DagsterGrpcClient
from dagster_graphql import DagsterGraphQLClient

from sync_assets.assets.alerts import FAILURE_SENSOR
from sync_assets.sync.audit import ABANDONED_MESSAGE
from sync_assets_tests.helpers import (
    create_source,
    free_port,
    make_harness,
    order_row,
    read_rows,
    sync_log_rows,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCATION = "sync_assets"
REPOSITORY = "__repository__"
DEADLINE = 240.0  # seconds; a wait ends as soon as what it waits for has happened
EVERY_MINUTE = "* * * * *"
TICKING = "sync_mass_every_minute"  # a table's own cron, named in words
ORDERS = {"primary_key": ["id"], "updated_at": "updated_at"}
T = TypeVar("T")
logger = logging.getLogger(__name__)


def production_config(pg: sa.URL) -> dict[str, Any]:
    """deploy/dagster.yaml, changed only where this machine differs from production."""
    config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    database = config["storage"]["postgres"]["postgres_db"]
    # The suite's PostgreSQL listens on a unix socket only (libpq's `host` parameter names its folder).
    database["port"] = pg.port or 5432
    if "host" in pg.query:
        database["params"] = {"host": pg.query["host"]}
    # No Docker engine here: runs start as processes of the code server, Dagster's default launcher.
    config["run_launcher"] = {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"}
    # The daemon frees a finished run's pool slots 300 s after the run ended, looking every 120 s
    # (the default poll): up to 7 minutes for the kill scenario. 5 s each keep it under a minute.
    config["run_monitoring"].update(free_slots_after_run_end_seconds=5, poll_interval_seconds=5)
    return config


@dataclass
class Production:
    """The running instance: GraphQL for what a user does, the instance's storage for what happened."""

    web_port: int
    instance: dg.DagsterInstance
    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.web_port}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert "errors" not in answer, answer
        return answer["data"]

    def submit(self, key: list[str], partition: str) -> str:
        """A run of one asset and partition, as the UI submits it: into the run queue."""
        client = DagsterGraphQLClient("127.0.0.1", port_number=self.web_port)
        return client.submit_job_execution(
            "__ASSET_JOB",
            repository_location_name=LOCATION,
            asset_selection=[key],
            tags={"dagster/partition": partition},
        )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait(self, what: str, condition: Callable[[], T | None], deadline: float = DEADLINE) -> T:
        """Poll `condition` until it returns something; fail with the processes' logs otherwise."""
        end = time.monotonic() + deadline
        while True:
            found = condition()
            if found is not None and found is not False:
                return found
            dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
            if dead or time.monotonic() > end:
                tails = "\n".join(f"--- {name}.log\n{self.log(name)[-3000:]}" for name in self.processes)
                problem = f"processes exited: {dead}" if dead else f"not within {deadline:.0f} s"
                pytest.fail(f"waiting for {what}: {problem}\n{tails}")
            time.sleep(0.5)

    def finished(self, run_id: str) -> dg.DagsterRun | None:
        run = self.instance.get_run_by_id(run_id)
        return run if run is not None and run.is_finished else None

    def messages(self, run_id: str) -> list[str]:
        return [entry.message for entry in self.instance.all_logs(run_id)]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, then SIGKILL to all that is left (dagster-1.13.md §10)."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for member in tree:  # a process that left the group, too
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(tree, timeout=20)
    process.wait(timeout=20)


@pytest.fixture
def start_production(
    tmp_path: Path, make_pg_database: Callable[[], sa.URL], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Path], Production]]:
    """start(catalog) -> Production: code server, daemon and webserver; always stopped afterwards."""
    with contextlib.ExitStack() as stack:

        def start(catalog: Path) -> Production:
            pg = make_pg_database()  # Dagster's own storage: a database of its own
            home = tmp_path / "dagster_home"
            home.mkdir()
            (home / "dagster.yaml").write_text(yaml.safe_dump(production_config(pg), sort_keys=False))
            grpc_port, web_port = free_port(), free_port()
            workspace = tmp_path / "workspace.yaml"
            server = {"host": "127.0.0.1", "port": grpc_port, "location_name": LOCATION}
            workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": server}]}))
            # The credentials reach Dagster through the {env: ...} keys of deploy/dagster.yaml.
            monkeypatch.setenv("DAGSTER_HOME", str(home))
            monkeypatch.setenv("DAGSTER_PG_HOST", pg.host or "")
            monkeypatch.setenv("DAGSTER_PG_USER", pg.username or "")
            monkeypatch.setenv("DAGSTER_PG_PASSWORD", pg.password or "")
            monkeypatch.setenv("DAGSTER_PG_DB", pg.database or "")
            monkeypatch.setenv("SYNC_ASSETS_CATALOG", str(catalog))
            processes: dict[str, subprocess.Popen[bytes]] = {}

            def launch(name: str, command: list[str]) -> None:
                log = stack.enter_context((tmp_path / f"{name}.log").open("wb"))
                processes[name] = subprocess.Popen(
                    command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
                stack.callback(_stop, processes[name])

            serve = f"code-server start -h 127.0.0.1 -p {grpc_port} -m sync_assets.definitions"
            launch("code_server", [str(BIN / "dagster"), *serve.split(), "--location-name", LOCATION])
            production = Production(web_port, dg.DagsterInstance.get(), processes, tmp_path)
            stack.callback(production.instance.dispose)
            # The daemon and the webserver load the location once it is served.
            production.wait("the code server", lambda: _serves(grpc_port))
            launch("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
            web = f"-h 127.0.0.1 -p {web_port}"
            launch("webserver", [str(BIN / "dagster-webserver"), *web.split(), "-w", str(workspace)])
            production.wait("the webserver", lambda: _serves_http(web_port))
            return production

        yield start


def _serves(grpc_port: int) -> bool:
    try:
        DagsterGrpcClient(port=grpc_port, host="127.0.0.1").ping("")
    except Exception:  # any failure means: not serving yet
        return False
    return True


def _serves_http(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on a SQLite source: a sync reading it waits (SQLite's busy timeout, 5 min)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        conn.close()


def test_production_instance(tmp_path, monkeypatch, make_database, start_production, webhook):
    url, received = webhook
    monkeypatch.setenv("SYNC_TEST_WEBHOOK", url)
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 11)], name="ticked")
    # The two tables whose syncs the test holds up each read a source file of their own.
    lockable = {name: tmp_path / f"{name}_source.sqlite" for name in ("orders", "killed")}
    for name, path in lockable.items():
        create_source(sa.make_url(f"sqlite:///{path}"), [order_row(i) for i in range(1, 21)], name=name)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[
            {"name": "ticked", "source_table": "ticked", **ORDERS, "schedules": {"mass": EVERY_MINUTE}},
            {"name": "broken", "source_table": "missing", "primary_key": ["id"]},
            *({"name": n, "source": f"{n}_src", "source_table": n, **ORDERS} for n in lockable),
        ],
        extra={
            "connections": {
                "src": {"url": "${SYNC_TEST_SOURCE_URL}"},
                "cache": {"url": "${SYNC_TEST_CACHE_URL}"},
                **{f"{n}_src": {"url": f"sqlite:///{path}"} for n, path in lockable.items()},
            },
            "alerts": {"webhook_url": "${SYNC_TEST_WEBHOOK}"},
        },
    )
    production = start_production(harness.path)

    # The schedule goes first: its tick comes at the next full minute, while the rest runs.
    started = production.graphql(START_SCHEDULE, {"selector": _selector(scheduleName=TICKING)})
    assert started["startSchedule"]["scheduleState"]["status"] == "RUNNING", started
    # A run-failure sensor reports failures after its first tick only.
    production.wait("the failure sensor's first tick", lambda: _ticked(production, FAILURE_SENSOR))
    broken = production.submit(["src", "broken"], "mass")

    runs_of_one_table_never_overlap(production, cache_url, lockable["orders"])
    killed = killed_run_fails_and_frees_its_slot(production, cache_url, lockable["killed"])

    def alert_for(run_id: str) -> dict[str, Any] | None:
        return next(
            (m for m in received if m["title"].startswith("Sync failed") and run_id in m["title"]), None
        )

    assert production.wait("the broken run", lambda: production.finished(broken)).status.value == "FAILURE"
    alert = production.wait("the failure alert of the broken run", lambda: alert_for(broken))
    assert "table 'broken': source table missing does not exist" in alert["text"], alert
    assert production.wait("the failure alert of the killed run", lambda: alert_for(killed))

    scheduled = production.wait("a run of the schedule's tick", lambda: _schedule_run(production))
    assert (
        production.wait("the scheduled run", lambda: production.finished(scheduled)).status.value == "SUCCESS"
    )
    log = {r["run_id"]: r for r in sync_log_rows(cache_url, "ticked")}
    assert log[scheduled]["status"] == "succeeded" and log[scheduled]["rows_read"] == 10


def runs_of_one_table_never_overlap(production: Production, cache_url: sa.URL, source: Path) -> None:
    """The second run of a table waits for the first: the table's pool holds one sync at a time."""
    with locked(source):
        first = production.submit(["orders_src", "orders"], "mass")
        production.wait("the first sync to start", lambda: _attempt(cache_url, first, "running"))
        second = production.submit(["orders_src", "orders"], "mass")
        waited = production.wait("the second run to wait on the pool", lambda: _pool_wait(production, second))
        assert "sync/orders" in waited, waited
        assert production.instance.get_run_by_id(second).status.value in ("QUEUED", "STARTED"), waited
    for run_id in (first, second):
        assert production.wait("both runs", lambda r=run_id: production.finished(r)).status.value == "SUCCESS"
    one, two = (_attempt(cache_url, r, "succeeded") for r in (first, second))
    assert one is not None and two is not None
    assert one["finished_at"] <= two["started_at"], (one, two)


def killed_run_fails_and_frees_its_slot(production: Production, cache_url: sa.URL, source: Path) -> str:
    """SIGKILL of a run's worker mid-sync: the run fails, is retried, and the retry gets the pool slot.

    The worker dies with every process under it, as when its container dies: under Dagster's
    default launcher a step process outlives a killed worker, and would finish the sync of a run
    that Dagster has already failed (docs/deployment.md).
    """
    with locked(source):
        run_id = production.submit(["killed_src", "killed"], "mass")
        attempt = production.wait("the sync to start", lambda: _attempt(cache_url, run_id, "running"))
        worker = run_worker(production, attempt["pid"])
        assert f"Started process for run (pid: {worker.pid})." in production.messages(run_id)
        victims = [worker, *worker.children(recursive=True)]
        killed_at = time.monotonic()
        for process in victims:
            process.kill()
        psutil.wait_procs(victims, timeout=30)
        run = production.wait("the killed run to be failed", lambda: production.finished(run_id))
        failed_after = time.monotonic() - killed_at
        assert run.status.value == "FAILURE"
        assert any("terminated by signal 9 (SIGKILL)" in m for m in production.messages(run_id))

    # run_retries (deploy/dagster.yaml) re-executes a run whose worker crashed; the retry needs the
    # slot the dead step still holds, until the daemon frees it (or the next sync reaps it).
    retry = production.wait("the retry of the killed run", lambda: _retry_of(production, run_id))
    freed_after: float | None = None

    def retry_done() -> dg.DagsterRun | None:
        nonlocal freed_after
        info = production.instance.event_log_storage.get_concurrency_info("sync/killed")
        if freed_after is None and all(slot.run_id != run_id for slot in info.claimed_slots):
            freed_after = time.monotonic() - killed_at
        return production.finished(retry)

    assert production.wait("the retry", retry_done).status.value == "SUCCESS"
    logger.info(  # the figures of docs/deployment.md
        "killed run failed %.1f s after the kill; its slot was free after %.1f s; the retry succeeded after %.1f s",
        failed_after,
        freed_after or float("nan"),
        time.monotonic() - killed_at,
    )
    log = sync_log_rows(cache_url, "killed")
    assert [(r["run_id"], r["status"]) for r in log] == [(run_id, "failed"), (retry, "succeeded")]
    assert log[0]["error"] == ABANDONED_MESSAGE
    assert read_rows(cache_url, "killed") == read_rows(sa.make_url(f"sqlite:///{source}"), "killed")
    info = production.instance.event_log_storage.get_concurrency_info("sync/killed")
    assert not info.claimed_slots and not info.pending_steps, info
    return run_id


def run_worker(production: Production, step_pid: int) -> psutil.Process:
    """The run worker the code server started: the spawned process that runs the sync (a run of one
    table, in-process) or is above its step process."""
    code_server = psutil.Process(production.processes["code_server"].pid)
    workers = [p for p in code_server.children(recursive=True) if "multiprocessing.spawn" in _command(p)]
    above = {step_pid, *(p.pid for p in psutil.Process(step_pid).parents())}
    (worker,) = [w for w in workers if w.pid in above]
    return worker


def _command(process: psutil.Process) -> str:
    """A process's command line; empty for one that has exited (an earlier run's worker the code
    server has not reaped yet is a zombie, whose command line cannot be read)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _attempt(cache_url: sa.URL, run_id: str, status: str) -> dict[str, Any] | None:
    try:
        rows = sync_log_rows(cache_url)
    except sa.exc.OperationalError:  # no sync_log before the first sync
        return None
    return next((r for r in rows if r["run_id"] == run_id and r["status"] == status), None)


def _pool_wait(production: Production, run_id: str) -> str | None:
    """What shows that a run waits on a pool: a blocked step, or the coordinator holding the run.

    With `block_op_concurrency_limited_runs` on (the default), the queued coordinator keeps a run
    whose every first step's pool is full in the queue, and says so in the daemon's log only.
    """
    for message in production.messages(run_id):
        if "blocked by limit for pool" in message:
            return message
    found = re.search(rf"Run {run_id} is blocked by global concurrency limits: .*", production.log("daemon"))
    return found.group(0) if found else None


def _retry_of(production: Production, run_id: str) -> str | None:
    runs = production.instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
    return runs[0].run_id if runs else None


def _schedule_run(production: Production) -> str | None:
    runs = production.instance.get_runs(dg.RunsFilter(tags={"dagster/schedule_name": TICKING}))
    return runs[-1].run_id if runs else None


def _ticked(production: Production, sensor: str) -> bool:
    answer = production.graphql(SENSOR_TICKS, {"selector": _selector(sensorName=sensor)})
    return bool(answer["sensorOrError"]["sensorState"]["ticks"])


def _selector(**name: str) -> dict[str, str]:
    return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, **name}


START_SCHEDULE = """
mutation ($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}"""
SENSOR_TICKS = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 1) { status } } }
  }
}"""
