"""Retries, post-processing, dependencies, per-source parallelism and alerts, on real databases."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_assets_tests.helpers import (
    FlakyProxy,
    create_source,
    failure_message,
    grow_source,
    make_harness,
    materialize_cli,
    order_row,
    read_rows,
    sync_log_rows,
)

ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
FAST_RETRIES = {"retries": {"max_retries": 2, "delay": "0.2s", "jitter": False}}


def _events(result: dg.ExecuteInProcessResult, kind: str) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.event_type_value == kind]


def test_dropped_connection_is_retried_and_succeeds(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("postgresql"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 101)])
    proxy = FlakyProxy(source_url)
    try:
        harness = make_harness(
            tmp_path,
            monkeypatch,
            source_url=proxy.url,
            cache_url=cache_url,
            tables=[ORDERS],
            connection=FAST_RETRIES,
        )
        result = harness.sync("orders", "mass")
    finally:
        proxy.close()
    assert result.success
    assert len(_events(result, "STEP_UP_FOR_RETRY")) == 1
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    first, second = sync_log_rows(cache_url, "orders")
    assert first["status"] == "failed" and "OperationalError" in first["error"]
    assert second["status"] == "succeeded"


def test_permanent_error_is_not_retried(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("postgresql"), make_database("sqlite")
    create_source(source_url, [order_row(1)])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**ORDERS, "updated_at": "modified"}],
        connection=FAST_RETRIES,
    )
    result = harness.sync("orders", "mass")
    assert not result.success
    assert not _events(result, "STEP_UP_FOR_RETRY")
    assert "updated_at (watermark) column 'modified' is not in the source" in failure_message(result)
    assert len(sync_log_rows(cache_url, "orders")) == 1


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql"])
def test_post_sql_runs_in_the_sync_transaction(tmp_path, monkeypatch, make_database, cache_kind):
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    create_source(source_url, [order_row(i) for i in range(1, 41)])
    engine = sa.create_engine(cache_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE order_summary (table_name VARCHAR(50), row_count INTEGER)"))
    post_sql = [
        "DELETE FROM order_summary",
        "INSERT INTO order_summary SELECT 'orders', count(*) FROM {table}",
    ]
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**ORDERS, "post_sql": post_sql}],
    )
    assert harness.sync("orders", "mass").success
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT table_name, row_count FROM order_summary")).all() == [
            ("orders", 40)
        ]

    # A failing statement rolls the whole sync back: data, summary and sync_log stay as they were.
    create_source_more = [order_row(i) for i in range(41, 51)]
    source = sa.create_engine(source_url)
    with source.begin() as conn:
        conn.execute(sa.Table("orders", sa.MetaData(), autoload_with=conn).insert(), create_source_more)
    source.dispose()
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**ORDERS, "post_sql": [*post_sql, "UPDATE no_such_table SET x = 1"]}],
    )
    result = harness.sync("orders", "mass")
    assert not result.success
    assert "post_sql phase" in failure_message(result)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT row_count FROM order_summary")).scalar_one() == 40
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one() == 40
    assert [r["status"] for r in sync_log_rows(cache_url, "orders")] == ["succeeded", "failed"]
    engine.dispose()


def test_dependencies_sync_in_order(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 11)])
    create_source(source_url, [order_row(i) for i in range(1, 11)], name="items")
    tables = [
        {**ORDERS, "deps": ["items"]},
        {"name": "items", "source_table": "items", "primary_key": ["id"], "updated_at": "updated_at"},
    ]
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=tables)
    defs = harness.defs
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["src", "orders"])).parent_keys == {dg.AssetKey(["src", "items"])}
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key="mass", instance=harness.instance
    )
    assert result.success
    order = [e.step_key for e in _events(result, "STEP_SUCCESS")]
    assert order == ["src__items", "src__orders"]
    assert [r["table_name"] for r in sync_log_rows(cache_url)] == ["items", "orders"]


def test_max_parallel_limits_one_source_across_processes(tmp_path, monkeypatch, make_database):
    """Three tables of one source with max_parallel 1 run one after the other, each in its own process."""
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    for name in ("t1", "t2", "t3"):
        create_source(source_url, [order_row(i) for i in range(1, 2001)], name=name)
    tables = [{"name": n, "source_table": n, "primary_key": ["id"]} for n in ("t1", "t2", "t3")]
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=tables,
        connection={"max_parallel": 1},
    )
    home = tmp_path / "home"
    home.mkdir()
    done = materialize_cli(harness.path, home, select="*", partition=None)
    output, _ = done.communicate(timeout=300)
    assert done.returncode == 0, output[-3000:]
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        spans: dict[str, list[float]] = {}
        processes = set()
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event and event.event_type_value in ("STEP_START", "STEP_SUCCESS"):
                spans.setdefault(event.step_key, []).append(entry.timestamp)
                processes.add(event.pid)
    assert len(spans) == 3 and len(processes) == 3, "each table synced in its own step process"
    intervals = sorted(spans.values())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(intervals)), intervals
    assert sorted(r["table_name"] for r in sync_log_rows(cache_url)) == ["t1", "t2", "t3"]


def test_max_parallel_holds_across_separate_runs(tmp_path, monkeypatch, make_database):
    """Two CLI runs of two tables of one source (max_parallel 1): the second waits for a free slot."""
    import time

    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    for name in ("t1", "t2"):
        create_source(source_url, [order_row(1)], name=name)
        grow_source(source_url, first_id=2, rows=400_000, name=name)
    tables = [
        {"name": n, "source_table": n, "primary_key": ["id"], "direct_copy": False} for n in ("t1", "t2")
    ]
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=tables,
        connection={"max_parallel": 1},
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "SYNC_ASSETS_CATALOG": str(harness.path), "DAGSTER_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-c", "import dagster; dagster.DagsterInstance.get()"], env=env, check=True
    )

    def launch(table: str) -> subprocess.Popen[str]:
        return materialize_cli(harness.path, home, select=f"src/{table}", partition=None)

    # The source is locked: t1 holds its slot (its sync_log row is `running`) and waits on the
    # source, however fast the machine, until t2 has said that it waits for that slot.
    lock = sqlite3.connect(source_url.database, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    first = launch("t1")
    deadline = time.monotonic() + 120
    while not any(r["status"] == "running" for r in _log_if_any(cache_url)):
        assert first.poll() is None and time.monotonic() < deadline, "t1 never started"
        time.sleep(0.05)
    second = launch("t2")
    assert second.stdout is not None
    said = []
    for line in second.stdout:
        said.append(line)
        if "waiting, source 'src' already runs 1 sync(s) (max_parallel)" in line:
            break
    lock.execute("ROLLBACK")
    lock.close()
    out_first, _ = first.communicate(timeout=300)
    rest, _ = second.communicate(timeout=300)
    out_second = "".join(said) + rest
    assert first.returncode == 0, out_first[-2000:]
    assert second.returncode == 0, out_second[-2000:]
    assert "waiting, source 'src' already runs 1 sync(s) (max_parallel)" in out_second
    t1, t2 = sorted(sync_log_rows(cache_url), key=lambda r: r["table_name"])
    assert t1["status"] == t2["status"] == "succeeded"
    assert t2["started_at"] >= t1["finished_at"], "the second sync started only once the first had finished"


def _log_if_any(url: sa.URL) -> list[dict]:
    engine = sa.create_engine(url)
    exists = sa.inspect(engine).has_table("sync_log")
    engine.dispose()
    return sync_log_rows(url) if exists else []
