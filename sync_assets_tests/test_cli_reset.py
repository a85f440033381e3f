"""`sync-assets reset` (issue 10): the next incremental reads from the given watermark exactly, or
loads in full; the reset is a sync_log row, honoured until a sync succeeds after it."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sync_assets.sync import audit, watermark
from sync_assets_tests.cli import run_cli
from sync_assets_tests.helpers import (
    BASE_TIME,
    create_source,
    make_harness,
    materialization,
    order_row,
    sync_log_rows,
)

ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
ITEMS = {"name": "items", "source_table": "items", "primary_key": ["id"]}  # mass only
ROWS = 20


def _harness(tmp_path, monkeypatch, make_database, kind="sqlite"):
    source_url, cache_url = make_database(kind), make_database(kind)
    create_source(source_url, [order_row(i) for i in range(1, ROWS + 1)])
    create_source(source_url, [order_row(i) for i in range(1, 4)], name="items")
    harness = make_harness(
        tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS, ITEMS]
    )
    assert harness.sync("orders", "mass").success
    return harness, source_url, cache_url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_reset_to_a_timestamp_reads_from_it_without_lookback(tmp_path, monkeypatch, make_database, kind):
    harness, source_url, cache_url = _harness(tmp_path, monkeypatch, make_database, kind)
    # Without the reset, a daily re-reads the 2-day lookback: every row.
    assert materialization(harness.sync("orders", "daily"))["sync_assets/rows_read"] == ROWS
    at = BASE_TIME + timedelta(seconds=11, microseconds=11)  # row 11's updated_at
    result = run_cli("reset", "orders", "--to", at.isoformat(), catalog=harness.path, instance=None)
    assert result.exit_code == 0, result.output
    assert "orders: the next daily or hourly sync reads from 2026-03-01 08:00:11.123467 on" in result.stdout

    reset = sync_log_rows(cache_url, "orders")[-1]
    assert reset["status"] == audit.RESET == "reset"
    assert (reset["update_type"], reset["mode"]) == ("incremental", "incremental")
    assert reset["watermark_to"] == watermark.encode(at) == "2026-03-01 08:00:11.123467"
    assert reset["run_id"].startswith("reset-")
    assert (reset["host"], reset["pid"]) == (audit.HOST, os.getpid()), "the command's process"
    assert reset["started_at"] == reset["finished_at"] and reset["rows_read"] is None

    # A sync that fails after the reset leaves it in place.
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders RENAME TO orders_away"))
    assert not harness.sync("orders", "hourly").success
    assert sync_log_rows(cache_url, "orders")[-1]["status"] == "failed"
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders_away RENAME TO orders"))
    engine.dispose()

    synced = materialization(harness.sync("orders", "daily"))
    assert synced["sync_assets/mode"] == "incremental"
    assert synced["sync_assets/rows_read"] == ROWS - 10, "rows 11 to 20: from the reset on, no lookback"
    daily = sync_log_rows(cache_url, "orders")[-1]
    assert daily["status"] == "succeeded" and daily["watermark_from"] == "2026-03-01 08:00:11.123467"
    assert daily["watermark_to"] == watermark.encode(BASE_TIME + timedelta(seconds=ROWS, microseconds=ROWS))

    # The success after it decides from now on: the lookback applies again.
    assert materialization(harness.sync("orders", "daily"))["sync_assets/rows_read"] == ROWS


def test_reset_full_makes_the_next_incremental_load_in_full(tmp_path, monkeypatch, make_database):
    harness, _, cache_url = _harness(tmp_path, monkeypatch, make_database)
    result = run_cli("reset", "orders", "--full", catalog=harness.path, instance=None)
    assert result.exit_code == 0, result.output
    assert "orders: the next daily or hourly sync loads in full" in result.stdout
    reset = sync_log_rows(cache_url, "orders")[-1]
    assert (reset["status"], reset["update_type"], reset["mode"]) == ("reset", "incremental", "full")
    assert reset["watermark_to"] is None

    hourly = harness.sync("orders", "hourly")
    synced = materialization(hourly)
    assert synced["sync_assets/mode"] == "full" and synced["sync_assets/rows_read"] == ROWS
    logged = [entry.user_message for entry in harness.instance.all_logs(hourly.run_id)]
    assert "orders: reset to a full load, so this hourly sync loads in full" in logged
    row = sync_log_rows(cache_url, "orders")[-1]
    assert (row["mode"], row["watermark_from"]) == ("full", None)
    assert materialization(harness.sync("orders", "daily"))["sync_assets/mode"] == "incremental"


def test_reset_refuses_what_it_cannot_do(tmp_path, monkeypatch, make_database):
    harness, _, cache_url = _harness(tmp_path, monkeypatch, make_database)
    before = sync_log_rows(cache_url)

    def refused(*args: str, code: int = 1) -> str:
        result = run_cli("reset", *args, catalog=harness.path, instance=None)
        assert result.exit_code == code, result.output
        return result.output

    assert "unknown table 'nope' (the catalog has: items, orders)" in refused("nope", "--full")
    assert "table 'items' has no `updated_at` column" in refused("items", "--full")
    assert "--to 'last tuesday' is not an ISO 8601 timestamp" in refused("orders", "--to", "last tuesday")
    assert "give exactly one of --to TIMESTAMP or --full" in refused("orders", code=2)
    assert "give exactly one of" in refused("orders", "--full", "--to", "2026-03-01", code=2)
    # A sync of the table is running (its attempt opened by this live process).
    engine = sa.create_engine(cache_url)
    with engine.begin() as conn:
        audit.start(
            conn,
            table="orders",
            target="orders",
            source="src",
            update_type="daily",
            run_id="r1",
            retention_days=9,
        )
    engine.dispose()
    message = refused("orders", "--to", "2026-03-01")
    assert f"table 'orders' is being synced by run r1 (pid {os.getpid()} on {audit.HOST})" in message
    assert [r for r in sync_log_rows(cache_url) if r["status"] == "reset"] == []
    assert len(sync_log_rows(cache_url)) == len(before) + 1, "only the running attempt was added"


def test_a_reset_with_an_offset_applies_to_a_naive_watermark_as_utc(tmp_path, monkeypatch, make_database):
    harness, _, cache_url = _harness(tmp_path, monkeypatch, make_database)
    at = "2026-03-01T10:00:11.123467+02:00"  # row 11's updated_at, written in UTC+2
    assert run_cli("reset", "orders", "--to", at, catalog=harness.path, instance=None).exit_code == 0
    synced = materialization(harness.sync("orders", "daily"))
    assert synced["sync_assets/rows_read"] == ROWS - 10
    assert sync_log_rows(cache_url, "orders")[-1]["watermark_from"] == "2026-03-01 08:00:11.123467"


def test_reset_takes_the_watermark_columns_own_type(tmp_path, monkeypatch, make_database):
    """An integer watermark (a row version) resets to a number; a timestamp for it is refused, as
    the next incremental could not read it. The source says the column's type."""
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE versions (id INTEGER PRIMARY KEY, name TEXT, version INTEGER NOT NULL)")
        )
        conn.execute(sa.text("INSERT INTO versions VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)"))
    engine.dispose()
    spec = {"name": "versions", "source_table": "versions", "primary_key": ["id"], "updated_at": "version"}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    assert harness.sync("versions", "mass").success

    refused = run_cli("reset", "versions", "--to", "2026-03-01 08:00:00", catalog=harness.path, instance=None)
    assert refused.exit_code == 1
    assert "--to '2026-03-01 08:00:00' is not a number, and `version` holds integer values" in refused.output
    assert [r["status"] for r in sync_log_rows(cache_url, "versions")] == ["succeeded"]

    accepted = run_cli("reset", "versions", "--to", "20", catalog=harness.path, instance=None)
    assert accepted.exit_code == 0, accepted.output
    daily = harness.sync("versions", "daily")
    assert daily.success
    assert materialization(daily)["sync_assets/rows_read"] == 2, "versions 20 and 30"
    assert sync_log_rows(cache_url, "versions")[-1]["watermark_from"] == "20"


def test_reset_says_why_when_the_source_cannot_be_asked(tmp_path, monkeypatch, make_database):
    harness, _, _ = _harness(tmp_path, monkeypatch, make_database)
    monkeypatch.delenv("SYNC_TEST_SOURCE_URL")
    result = run_cli("reset", "orders", "--to", "2026-03-01", catalog=harness.path, instance=None)
    assert result.exit_code == 1
    assert "cannot check --to against the source's `updated_at` column" in result.output
    assert "SYNC_TEST_SOURCE_URL is not set" in result.output
