"""`sync-assets status` (issue 10): every state from real syncs on a persistent instance, the JSON
shape, the terminal table, exit codes, and unreachable databases reported on their rows."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from sync_assets.cli import main
from sync_assets.sync import audit
from sync_assets_tests.cli import by_row, cli_process, run_cli, status_json
from sync_assets_tests.helpers import (
    BASE_TIME,
    create_source,
    free_port,
    make_harness,
    materialize_cli,
    order_row,
    start_schedule,
    sync_log_rows,
)

ORDERS = {
    "name": "orders",
    "source_table": "orders",
    "primary_key": ["id"],
    "updated_at": "updated_at",
    # Fails at once: row 1 is coded C001.
    "checks": [{"sql": "SELECT * FROM {table} WHERE code = 'C001'", "name": "no_c001", "severity": "warn"}],
}
LOTS = {"name": "lots", "source_table": "lots", "primary_key": ["id"], "updated_at": "updated_at"}
ITEMS = {"name": "items", "source_table": "items", "primary_key": ["id"]}  # mass only
BROKEN = {"name": "broken", "source_table": "missing", "primary_key": ["id"]}  # mass only
JSON_FIELDS = {
    "table",
    "update_type",
    "state",
    "last_success_at",
    "last_failure_at",
    "error",
    "watermark",
    "running",
    "schedule",
    "freshness",
    "failing_checks",
    "reset",
    "lag",
}


@pytest.fixture
def setup(tmp_path, monkeypatch, make_database, make_instance, request):
    """(harness, cache URL): a SQLite source, and a cache of the kind the test asks (SQLite)."""
    source_url, cache_url = make_database("sqlite"), make_database(getattr(request, "param", "sqlite"))
    create_source(source_url, [order_row(i) for i in range(1, 21)])
    for name in ("lots", "items"):
        create_source(source_url, [order_row(i) for i in range(1, 6)], name=name)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[ORDERS, LOTS, ITEMS, BROKEN],
        defaults={"schedules": {"mass": "0 2 * * 0", "daily": "0 3 * * *"}},
    )
    harness.instance = make_instance("sqlite")
    sa.create_engine(cache_url).connect().close()  # an empty cache: nothing synced yet
    return harness, cache_url


def test_every_state_from_real_syncs(setup):
    harness, _ = setup
    catalog, instance = harness.path, harness.instance

    code, rows = status_json(catalog, instance)
    assert code == 0
    assert [(r["table"], r["update_type"]) for r in rows] == [
        ("orders", "mass"),
        ("orders", "daily"),
        ("orders", "hourly"),
        ("lots", "mass"),
        ("lots", "daily"),
        ("lots", "hourly"),
        ("items", "mass"),
        ("broken", "mass"),
    ], "one row per table and update type it supports, in catalog order"
    assert {r["state"] for r in rows} == {"never"}, "nothing synced, every schedule stopped"

    assert harness.sync("orders", "mass").success
    assert harness.sync("items", "mass").success
    assert not harness.sync("broken", "mass").success
    code, rows = status_json(catalog, instance)
    found = by_row(rows)
    assert code == 1, "the latest attempt of broken failed"
    assert found[("broken", "mass")]["state"] == "failed"
    assert "missing" in found[("broken", "mass")]["error"]
    assert found[("broken", "mass")]["last_failure_at"] is not None
    # A full load brings every update type up to date: orders' daily and hourly succeeded with it.
    mass = found[("orders", "mass")]
    for kind in ("mass", "daily", "hourly"):
        assert found[("orders", kind)]["state"] == "not_scheduled"
        assert found[("orders", kind)]["last_success_at"] == mass["last_success_at"]
    assert found[("items", "mass")]["state"] == "not_scheduled"
    assert found[("lots", "mass")]["state"] == "never"
    # The warn rule failed in the sync's own step, and the instance recorded it.
    assert [c["name"] for c in mass["failing_checks"]] == ["no_c001"]
    assert mass["failing_checks"][0]["severity"] == "WARN"
    assert found[("items", "mass")]["failing_checks"] == []

    # The daily schedule runs, started 4 days ago: lots has had no daily success since it was
    # first due (stale), orders has (ok); hourly has no schedule at all.
    start_schedule(instance, harness.defs, "sync_daily", datetime.now(UTC) - timedelta(days=4))
    code, rows = status_json(catalog, instance)
    found = by_row(rows)
    assert found[("orders", "daily")]["state"] == "ok"
    assert found[("orders", "daily")]["schedule"] == "sync_daily"
    assert found[("orders", "daily")]["freshness"].startswith("fresh: last daily sync")
    assert found[("lots", "daily")]["state"] == "stale"
    assert found[("lots", "daily")]["freshness"].startswith(
        "stale: no successful daily sync since sync_daily"
    )
    assert found[("lots", "hourly")]["state"] == "never"
    assert found[("orders", "hourly")]["state"] == "not_scheduled"
    assert found[("orders", "mass")]["state"] == "not_scheduled", "sync_mass is still stopped"

    # Exit codes follow the tables shown.
    assert status_json(catalog, instance, "orders", "items")[0] == 0
    assert status_json(catalog, instance, "lots")[0] == 1, "stale while its schedule runs"
    assert status_json(catalog, instance, "broken")[0] == 1, "its latest attempt failed"
    assert harness.sync("lots", "daily").success
    assert status_json(catalog, instance, "lots")[0] == 0
    assert by_row(status_json(catalog, instance, "lots")[1])[("lots", "daily")]["state"] == "ok"


@pytest.mark.parametrize("setup", ["sqlite", "postgresql", "duckdb"], indirect=True)
def test_json_fields_are_iso_times_and_the_watermark(setup):
    harness, _ = setup
    assert harness.sync("orders", "mass").success
    _, rows = status_json(harness.path, harness.instance, "orders")
    for row in rows:
        assert set(row) == JSON_FIELDS
    daily = by_row(rows)[("orders", "daily")]
    success = datetime.fromisoformat(daily["last_success_at"])
    assert success.tzinfo is not None and abs(datetime.now(UTC) - success) < timedelta(minutes=10)
    assert daily["last_failure_at"] is None and daily["error"] is None and daily["running"] == []
    newest = BASE_TIME + timedelta(seconds=20, microseconds=20)
    assert datetime.fromisoformat(daily["watermark"]) == newest
    assert daily["watermark"] == newest.isoformat(), "ISO 8601, at the precision sync_log keeps"
    assert daily["reset"] is None and daily["lag"] is None


def test_a_live_attempt_is_running_and_one_whose_process_is_gone_is_abandoned(setup):
    harness, cache_url = setup
    assert harness.sync("orders", "mass").success
    engine = sa.create_engine(cache_url)
    # An attempt opened by a process that has ended: a new sync would close it as abandoned.
    opener = (
        "import sqlalchemy as sa, sys; from sync_assets.sync import audit\n"
        "engine = sa.create_engine(sys.argv[1])\n"
        "with engine.begin() as conn:\n"
        "    audit.start(conn, table='orders', target='orders', source='src', update_type='daily',"
        " run_id='gone', retention_days=90)\n"
    )
    subprocess.run([sys.executable, "-c", opener, str(cache_url)], check=True)
    # An attempt opened by this test process, alive while the status is read.
    with engine.begin() as conn:
        live = audit.start(
            conn,
            table="orders",
            target="orders",
            source="src",
            update_type="hourly",
            run_id="live",
            retention_days=90,
        )
    code, rows = status_json(harness.path, harness.instance, "orders")
    found = by_row(rows)
    hourly, daily = found[("orders", "hourly")], found[("orders", "daily")]
    assert hourly["state"] == "running"
    assert hourly["running"] == [
        {
            "run_id": "live",
            "host": audit.HOST,
            "pid": os.getpid(),
            "started_at": hourly["running"][0]["started_at"],
        }
    ]
    assert daily["state"] == "failed" and daily["running"] == [], "abandoned, never running"
    assert daily["error"] == audit.ABANDONED_MESSAGE
    assert code == 1
    # Any other end than `failed` is not a failure (the `cancelled` of an interrupted sync).
    with engine.begin() as conn:
        conn.execute(
            sa.update(audit.sync_log).where(audit.sync_log.c.run_id == "gone").values(status="cancelled")
        )
        audit.succeed(conn, live, audit.Outcome("incremental", 0, 0, 0, 0, 0, None, None))
    engine.dispose()
    code, rows = status_json(harness.path, harness.instance, "orders")
    assert code == 0
    assert {r["update_type"]: r["state"] for r in rows} == {
        "mass": "not_scheduled",
        "daily": "not_scheduled",
        "hourly": "not_scheduled",
    }


def test_an_attempt_of_another_machine_is_alive_while_its_dagster_run_is(setup):
    harness, cache_url = setup
    mass = harness.sync("orders", "mass")
    assert mass.success
    engine = sa.create_engine(cache_url)
    with engine.begin() as conn:
        # As a sync on another machine opens its attempt (audit.start), there.
        for update_type, run_id in (("daily", mass.run_id), ("hourly", "not-a-run-of-this-instance")):
            conn.execute(
                sa.insert(audit.sync_log).values(
                    table_name="orders",
                    target_table="orders",
                    source="src",
                    update_type=update_type,
                    run_id=run_id,
                    status=audit.RUNNING,
                    started_at=audit.now(),
                    host="another-machine",
                    pid=os.getpid(),
                )
            )
    engine.dispose()
    found = by_row(status_json(harness.path, harness.instance, "orders")[1])
    assert found[("orders", "daily")]["state"] == "failed", "its run has finished: abandoned"
    assert found[("orders", "daily")]["error"] == audit.ABANDONED_MESSAGE
    assert found[("orders", "hourly")]["state"] == "running", "a run the instance does not know may run"
    # Without an instance, nothing tells that the other machine's sync has ended.
    found = by_row(status_json(harness.path, None, "orders")[1])
    assert found[("orders", "daily")]["state"] == found[("orders", "hourly")]["state"] == "running"


def test_the_terminal_table_is_aligned_and_says_why(setup):
    harness, _ = setup
    assert harness.sync("orders", "mass").success
    assert not harness.sync("broken", "mass").success
    result = run_cli("status", "orders", "broken", catalog=harness.path, instance=harness.instance)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    header = lines[0]
    assert header.split() == [
        "TABLE",
        "TYPE",
        "STATE",
        "LAST",
        "SUCCESS",
        "LAST",
        "FAILURE",
        "RUNNING",
        "WATERMARK",
        "CHECKS",
    ]
    rows = lines[1:5]
    state_at = header.index("STATE")
    assert [row[state_at:].split()[0] for row in rows] == ["not_scheduled"] * 3 + ["failed"]
    assert rows[0].startswith("orders ") and rows[1].startswith("      ") and rows[3].startswith("broken")
    success = rows[0][header.index("LAST SUCCESS") :]
    assert "s ago)" in success, "a timestamp with its age"
    assert rows[0][header.index("CHECKS") :].strip() == "no_c001"
    assert "2026-03-01 08:00:20.123476" in rows[0], "the watermark as sync_log keeps it"
    (why,) = [line for line in lines[5:] if line.strip()]
    assert why.startswith("broken mass: ") and "missing" in why


def test_without_dagster_home_sync_log_alone_is_shown(setup):
    harness, _ = setup
    assert harness.sync("orders", "mass").success
    assert not harness.sync("broken", "mass").success
    result = run_cli("status", "--json", catalog=harness.path, instance=None)
    assert result.stderr.count("DAGSTER_HOME is not set") == 1
    found = by_row(json.loads(result.stdout))
    assert found[("orders", "daily")]["state"] == "ok", "its latest attempt succeeded"
    assert found[("orders", "daily")]["failing_checks"] is None, "no instance to read them from"
    assert found[("broken", "mass")]["state"] == "failed"
    assert found[("lots", "daily")]["state"] == "never"
    assert result.exit_code == 1


def test_an_instance_whose_storage_cannot_be_reached_leaves_sync_log_to_tell(setup, tmp_path):
    """DAGSTER_HOME names PostgreSQL storage nobody listens on: no traceback, the note says so."""
    harness, _ = setup
    assert harness.sync("orders", "mass").success
    home = tmp_path / "unreachable_home"
    home.mkdir()
    url = f"postgresql+psycopg2://dagster@127.0.0.1:{free_port()}/dagster"
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_url": url}}}))
    runner = CliRunner(env={"SYNC_ASSETS_CATALOG": str(harness.path), "DAGSTER_HOME": str(home)})
    result = runner.invoke(main, ["status", "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert f"the Dagster instance in DAGSTER_HOME={home} cannot be opened" in result.stderr
    assert by_row(json.loads(result.stdout))[("orders", "daily")]["state"] == "ok"


@pytest.mark.parametrize("fault", ["unset_variable", "refused"])
def test_an_unreachable_cache_gives_rows_with_the_reason(
    tmp_path, monkeypatch, make_database, make_instance, fault
):
    source_url = make_database("sqlite")
    create_source(source_url, [order_row(1)])
    secret = "s3cret-pw"
    monkeypatch.setenv("SYNC_TEST_CACHE_PASSWORD", secret)
    cache = {
        "unset_variable": {"url": "${SYNC_TEST_NOT_SET}"},
        "refused": {
            "url": f"postgresql+psycopg://sync@127.0.0.1:{free_port()}/cache",
            "password": "${SYNC_TEST_CACHE_PASSWORD}",
        },
    }[fault]
    harness = make_harness(
        tmp_path, monkeypatch, source_url=source_url, cache_url=source_url, tables=[ORDERS, ITEMS]
    )
    catalog = yaml.safe_load(harness.path.read_text())
    catalog["connections"]["cache"] = cache
    harness.path.write_text(yaml.safe_dump(catalog))
    expected = {
        "unset_variable": "environment variable SYNC_TEST_NOT_SET is not set (connection 'cache')",
        "refused": "cache connection 'cache': OperationalError",
    }[fault]
    result = run_cli("status", "--json", catalog=harness.path, instance=make_instance("sqlite"))
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert len(rows) == 4 and {r["state"] for r in rows} == {"failed"}
    assert all(expected in r["error"] for r in rows), rows[0]["error"]
    assert secret not in result.output


def test_a_cache_file_not_created_yet_means_nothing_synced(
    tmp_path, monkeypatch, make_database, make_instance
):
    """A fresh deployment: the SQLite cache appears with the first sync. Until then every table is
    `never`, the command says why, exits 0, and creates nothing."""
    source_url = make_database("sqlite")
    create_source(source_url, [order_row(1)])
    cache_file = tmp_path / "nowhere" / "cache.sqlite"
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=sa.make_url(f"sqlite:///{cache_file}"),
        tables=[ORDERS],
    )
    result = run_cli("status", "--json", catalog=harness.path, instance=make_instance("sqlite"))
    assert result.exit_code == 0, result.output
    assert {r["state"] for r in json.loads(result.stdout)} == {"never"}
    assert f"cache connection 'cache': {cache_file} does not exist yet: no table has synced" in result.stderr
    assert not cache_file.parent.exists(), "looking created nothing"


def test_lag_reads_the_source_and_an_unreachable_source_is_a_failure(setup, monkeypatch):
    harness, _ = setup
    assert harness.sync("orders", "mass").success
    result = run_cli(
        "status", "--json", "--lag", "orders", "items", catalog=harness.path, instance=harness.instance
    )
    found = by_row(json.loads(result.stdout))
    lag = found[("orders", "daily")]["lag"]
    assert lag["seconds"] == 0 and lag["passed"] and lag["source_max"] == lag["cache_max"]
    assert found[("items", "mass")]["lag"] is None, "a mass-only table has no newest row to compare"
    assert result.exit_code == 0
    monkeypatch.delenv("SYNC_TEST_SOURCE_URL")
    result = run_cli("status", "--json", "--lag", "orders", catalog=harness.path, instance=harness.instance)
    assert result.exit_code == 1
    for row in json.loads(result.stdout):
        assert row["error"] == "environment variable SYNC_TEST_SOURCE_URL is not set (connection 'src')"
        assert row["state"] == "not_scheduled", "sync_log still tells its state"
    text = run_cli("status", "--lag", "orders", catalog=harness.path, instance=harness.instance).stdout
    assert "SYNC_TEST_SOURCE_URL is not set" in text


def test_unknown_table_and_broken_catalog_are_usage_errors(setup, tmp_path):
    harness, _ = setup
    result = run_cli("status", "nope", catalog=harness.path, instance=harness.instance)
    assert result.exit_code == 2 and "unknown table 'nope'" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("connections: {}\n")
    result = run_cli("status", catalog=broken, instance=None)
    assert result.exit_code == 2 and f"{broken}:1:" in result.output


def test_a_real_sync_holding_the_table_is_running_for_a_status_process(setup):
    """`dagster asset materialize` in its own process, blocked on a lock the test holds on the
    source file; `python -m sync_assets.cli status` in another process sees it running, and a reset
    of the table is refused until the sync has ended."""
    harness, cache_url = setup
    home = Path(harness.instance.root_directory)
    source = sa.make_url(os.environ["SYNC_TEST_SOURCE_URL"]).database
    lock = sqlite3.connect(source, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the sync waits for it (SQLite's busy timeout: 300 s)
    process = materialize_cli(harness.path, home, select="src/orders")
    try:
        deadline = time.monotonic() + 120
        while not any(r["status"] == "running" for r in _rows(cache_url)):
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the sync never opened its sync_log row"
            time.sleep(0.2)
        shown = cli_process("status", "--json", "orders", catalog=harness.path, home=home)
        assert shown.returncode == 0, shown.stderr
        assert "Traceback" not in shown.stderr
        mass = by_row(json.loads(shown.stdout))[("orders", "mass")]
        assert mass["state"] == "running"
        (attempt,) = mass["running"]
        assert attempt["host"] == audit.HOST and psutil.pid_exists(attempt["pid"])
        assert harness.instance.get_run_by_id(attempt["run_id"]) is not None, "the Dagster run's id"
        refused = run_cli("reset", "orders", "--full", catalog=harness.path, instance=harness.instance)
        assert refused.exit_code == 1
        assert f"table 'orders' is being synced by run {attempt['run_id']}" in refused.output
    finally:
        lock.rollback()
        lock.close()
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    code, rows = status_json(harness.path, harness.instance, "orders")
    assert code == 0 and by_row(rows)[("orders", "mass")]["state"] == "not_scheduled"
    assert not any(r["status"] == "reset" for r in _rows(cache_url)), "the refused reset left no row"


def _rows(cache_url: sa.URL) -> list[dict[str, object]]:
    engine = sa.create_engine(cache_url)
    exists = sa.inspect(engine).has_table("sync_log")
    engine.dispose()
    return sync_log_rows(cache_url) if exists else []
