"""SIGKILL in the middle of a mass sync, through the CLI: the cache is untouched, the next run recovers."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

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

ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
BIG = 200_000


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql", "duckdb"])
def test_sigkill_mid_mass_sync_then_recovery(tmp_path, monkeypatch, make_database, cache_kind):
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
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    # The step processes die with the group; wait for them too, as a DuckDB file stays locked
    # until its writer is gone.
    psutil.wait_procs(steps, timeout=30)

    assert read_rows(cache_url, "orders") == before, "a killed sync leaves the target unchanged"
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded", "running"]

    recovery = materialize_cli(harness.path, home, select="src/orders")
    output, _ = recovery.communicate(timeout=300)
    assert recovery.returncode == 0, output[-3000:]
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded", "failed", "succeeded"]
    assert log[1]["error"].startswith("abandoned")
    assert log[2]["rows_read"] == BIG + 500
    assert not staging_tables(cache_url)
