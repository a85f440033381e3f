"""SIGKILL in the middle of a mass sync, through the CLI: the cache is untouched, the next run recovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync_assets_tests.helpers import (
    create_source,
    make_harness,
    order_row,
    read_rows,
    staging_tables,
    sync_log_rows,
)

ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
BIG = 200_000


def _grow(url: sa.URL, rows: int) -> None:
    """Append `rows` generated rows inside SQLite itself (fast, no Python loop)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "WITH RECURSIVE n(i) AS (SELECT 100000 UNION ALL SELECT i + 1 FROM n WHERE i < 100000 + :rows - 1) "
                "INSERT INTO orders (id, code, name, amount, big_amount, ratio, qty, active, due, note, payload, updated_at) "
                "SELECT i, 'K' || (i % 100), 'bulk row ' || i, (i % 100000) / 100.0, NULL, i / 3.0, i % 1000, i % 2, "
                "'2026-01-01', NULL, NULL, '2026-04-01 00:00:00.' || substr('000000' || (i % 1000000), -6) FROM n"
            ),
            {"rows": rows},
        )
    engine.dispose()


def _cli(catalog: Path, home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "SYNC_ASSETS_CATALOG": str(catalog), "DAGSTER_HOME": str(home)}
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "sync_assets.definitions"]
    command += ["--select", "src/orders", "--partition", "mass"]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql"])
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
    _grow(source_url, BIG)
    home = tmp_path / "dagster_home"
    home.mkdir()

    process = _cli(harness.path, home)
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
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)

    assert read_rows(cache_url, "orders") == before, "a killed sync leaves the target unchanged"
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded", "running"]

    recovery = _cli(harness.path, home)
    output, _ = recovery.communicate(timeout=300)
    assert recovery.returncode == 0, output[-3000:]
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded", "failed", "succeeded"]
    assert log[1]["error"].startswith("abandoned")
    assert log[2]["rows_read"] == BIG + 500
    assert not staging_tables(cache_url)
