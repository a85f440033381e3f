"""Errors a sync finds at run time: environment, source columns, a drifted target, secrets."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from sync_assets.redact import redact
from sync_assets.resources.database import SqlDatabase
from sync_assets.sync.audit import now, sync_log
from sync_assets_tests.helpers import (
    create_source,
    failure_message,
    make_harness,
    order_row,
    read_rows,
    sync_log_rows,
)

ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}


def test_missing_environment_variable_names_variable_and_table(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(1)])
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    monkeypatch.delenv("SYNC_TEST_SOURCE_URL")
    result = harness.sync("orders", "mass")
    assert not result.success
    assert "table 'orders': environment variable SYNC_TEST_SOURCE_URL is not set (connection 'src')" in (
        failure_message(result)
    )
    assert not sa.inspect(sa.create_engine(cache_url)).get_table_names(), "nothing was written to the cache"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"primary_key": ["order_id"]}, "table 'orders': primary key column 'order_id' is not in the source"),
        (
            {"updated_at": "modified"},
            "table 'orders': updated_at (watermark) column 'modified' is not in the source",
        ),
        ({"columns": {"ID": "order_id"}}, "table 'orders': renamed column 'ID' is not in the source"),
        ({"source_table": "ordrs"}, "table 'orders': source table ordrs does not exist"),
    ],
    ids=["key", "watermark", "rename", "table"],
)
def test_catalog_columns_missing_from_the_source_fail_before_data_moves(
    tmp_path, monkeypatch, make_database, change, expected
):
    source_url, cache_url = make_database("postgresql"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 11)])
    harness = make_harness(
        tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[{**ORDERS, **change}]
    )
    result = harness.sync("orders", "mass")
    assert not result.success
    assert expected in failure_message(result)
    assert not sa.inspect(sa.create_engine(cache_url)).has_table("orders")
    (attempt,) = sync_log_rows(cache_url, "orders")
    assert attempt["status"] == "failed" and expected in attempt["error"]


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql"])
def test_drifted_target_is_refused_and_left_alone(tmp_path, monkeypatch, make_database, cache_kind):
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    create_source(source_url, [order_row(i) for i in range(1, 11)])
    engine = sa.create_engine(cache_url)
    metadata = sa.MetaData()
    drifted = sa.Table(
        "orders", metadata, sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("code", sa.Integer)
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(drifted.insert(), [{"id": 1, "code": 7}])
    engine.dispose()
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])

    result = harness.sync("orders", "mass")
    assert not result.success
    message = failure_message(result)
    assert "table 'orders': target table orders no longer matches its source; nothing was changed" in message
    assert "column 'code' is INTEGER in the target, the source delivers string" in message
    assert "column 'amount' is missing from the target" in message
    assert read_rows(cache_url, "orders") == [(1, 7)]


def test_passwords_stay_out_of_config_events_and_sync_log(tmp_path, monkeypatch, make_database, pg_admin_url):
    secret = "S3cret-Pw-7f1e"
    source_url = make_database("postgresql")
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE sync_reader LOGIN PASSWORD '{secret}'"))
        conn.execute(sa.text(f'GRANT ALL ON DATABASE "{source_url.database}" TO sync_reader'))
    create_source(source_url, [order_row(i) for i in range(1, 21)])
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.text("GRANT SELECT ON orders TO sync_reader"))
    engine.dispose()
    cache_url = make_database("sqlite")
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url.set(username="sync_reader", password=None),
        cache_url=cache_url,
        tables=[ORDERS, {**ORDERS, "name": "broken", "source_table": "missing_table"}],
    )
    text = harness.path.read_text().replace(
        "url: ${SYNC_TEST_SOURCE_URL}", "url: ${SYNC_TEST_SOURCE_URL}\n    password: ${SYNC_TEST_PASSWORD}"
    )
    harness.path.write_text(text)
    monkeypatch.setenv("SYNC_TEST_PASSWORD", secret)
    try:
        assert harness.sync("orders", "mass").success
        assert not harness.sync("broken", "mass").success
        resource = harness.defs.resources["src"]
        assert isinstance(resource, SqlDatabase) and resource.password == "${SYNC_TEST_PASSWORD}"
        assert secret not in repr(resource)
        runs = harness.instance.get_runs()
        assert len(runs) == 2
        for run in runs:
            assert secret not in str(run.run_config)
            for entry in harness.instance.all_logs(run.run_id):
                assert secret not in str(entry)
        assert all(secret not in str(row) for row in sync_log_rows(cache_url))
        assert secret not in resource.display_url()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{source_url.database}" WITH (FORCE)'))
            conn.execute(sa.text("DROP ROLE sync_reader"))
        admin.dispose()


def test_redact_masks_known_secrets_and_url_passwords():
    text = "failed for postgresql://bob:pa55@db/x and dsn password=pa55 host=x; Pwd='abc def'"
    assert (
        redact(text, ["pa55"]) == "failed for postgresql://bob:***@db/x and dsn password=*** host=x; Pwd=***"
    )
    assert redact("mssql+pyodbc://sa:Tr1cky!@srv/db") == "mssql+pyodbc://sa:***@srv/db"


def test_old_sync_log_rows_are_purged(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(1)])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[ORDERS],
        defaults={"sync_log_retention_days": 30},
    )
    assert harness.sync("orders", "mass").success
    engine = sa.create_engine(cache_url)
    with engine.begin() as conn:
        old = {"table_name": "orders", "target_table": "orders", "update_type": "mass", "status": "succeeded"}
        conn.execute(sa.insert(sync_log), [{**old, "started_at": now() - timedelta(days=31)}])
        conn.execute(sa.insert(sync_log), [{**old, "started_at": now() - timedelta(days=29)}])
    engine.dispose()
    assert harness.sync("orders", "mass").success
    ages = [now() - r["started_at"] for r in sync_log_rows(cache_url)]
    assert len(ages) == 3 and max(ages) < timedelta(days=30)
