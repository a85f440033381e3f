"""A cache made by an earlier version has a sync_log without `rows_unchanged` (issue 10): the
next sync adds the column, and two syncs doing so at once both go on."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
import sqlalchemy_sybase
from sqlalchemy.dialects import mssql, oracle, postgresql, sqlite

from sync_assets.dialects.ddl import AddColumn
from sync_assets.dialects.duckdb import DuckDBReflectingDialect
from sync_assets.sync import audit
from sync_assets.sync.audit import sync_log
from sync_assets_tests.helpers import ORDERS, create_source, make_harness, order_row, sync_log_rows


def create_old_sync_log(url: sa.URL) -> None:
    """sync_log as the version before `rows_unchanged` made it, holding one attempt."""
    columns = [
        sa.Column(
            c.name,
            c.type,
            *([sa.Sequence("sync_log_id_seq", optional=True)] if c.name == "id" else []),
            primary_key=c.primary_key,
            nullable=c.nullable,
        )
        for c in sync_log.columns
        if c.name != "rows_unchanged"
    ]
    old = sa.Table("sync_log", sa.MetaData(), *columns)
    engine = sa.create_engine(url)
    old.create(engine)
    with engine.begin() as conn:
        conn.execute(
            old.insert().values(
                table_name="items",
                target_table="items",
                update_type="mass",
                mode="full",
                status="succeeded",
                started_at=audit.now(),
                finished_at=audit.now(),
                rows_written=5,
            )
        )
    engine.dispose()


def sync_log_columns(url: sa.URL) -> list[str]:
    engine = sa.create_engine(url)
    names = [c["name"] for c in sa.inspect(engine).get_columns("sync_log")]
    engine.dispose()
    return names


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql", "duckdb"])
def test_an_old_sync_log_gains_rows_unchanged(tmp_path, monkeypatch, make_database, cache_kind):
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    create_source(source_url, [order_row(i) for i in range(1, 11)])
    create_old_sync_log(cache_url)
    assert "rows_unchanged" not in sync_log_columns(cache_url)
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])

    assert harness.sync("orders", "mass").success
    assert harness.sync("orders", "daily").success
    assert sync_log_columns(cache_url).count("rows_unchanged") == 1
    log = sync_log_rows(cache_url)
    assert [(r["table_name"], r["rows_written"], r["rows_unchanged"]) for r in log] == [
        ("items", 5, None),  # recorded before the column existed
        ("orders", 10, 0),
        ("orders", 0, 10),
    ]


def test_two_syncs_adding_the_column_at_once_both_go_on(make_database):
    """Both saw the column missing; the second one's ALTER waits for the first one's lock, then
    fails on the column the first one added: not an error, the column is there."""
    url = make_database("postgresql")
    create_old_sync_log(url)
    engine, other = sa.create_engine(url), sa.create_engine(url)
    about_to_add, go_on = threading.Event(), threading.Event()

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _pause(conn, cursor, statement, *args):
        if statement.startswith("ALTER TABLE") and not about_to_add.is_set():
            about_to_add.set()
            go_on.wait(60)

    failures: list[BaseException] = []

    def second() -> None:
        try:
            audit.ensure_table(engine)
        except BaseException as err:  # the assertion below reports it
            failures.append(err)

    thread = threading.Thread(target=second)
    thread.start()
    assert about_to_add.wait(60), "ensure_table did not find the column missing"
    first = other.connect()
    first.begin()
    first.execute(AddColumn(sync_log, sync_log.c.rows_unchanged))  # holds the table's lock until commit
    go_on.set()
    waiting = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE%'"
    )
    with other.connect() as watcher:
        for _ in range(6000):  # a generous deadline for what will certainly happen
            if watcher.execute(waiting).scalar_one():
                break
            watcher.rollback()
            time.sleep(0.01)
        else:
            pytest.fail("the second ALTER TABLE never waited for the first one's lock")
    first.commit()
    first.close()
    thread.join(timeout=60)
    assert not thread.is_alive() and failures == []
    assert sync_log_columns(url).count("rows_unchanged") == 1
    engine.dispose()
    other.dispose()


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (sqlite.dialect(), "ALTER TABLE sync_log ADD COLUMN rows_unchanged BIGINT"),
        (postgresql.dialect(), "ALTER TABLE sync_log ADD COLUMN rows_unchanged BIGINT"),
        (DuckDBReflectingDialect(), "ALTER TABLE sync_log ADD COLUMN rows_unchanged BIGINT"),
        (oracle.dialect(), "ALTER TABLE sync_log ADD rows_unchanged NUMBER(19)"),
        # No COLUMN keyword in T-SQL, nor in ASE's Transact-SQL.
        (mssql.dialect(), "ALTER TABLE sync_log ADD rows_unchanged BIGINT NULL"),
        (sqlalchemy_sybase.dialect(), "ALTER TABLE sync_log ADD rows_unchanged BIGINT NULL"),
    ],
    ids=["sqlite", "postgresql", "duckdb", "oracle", "mssql", "sybase"],
)
def test_add_column_ddl(dialect, expected):
    assert str(AddColumn(sync_log, sync_log.c.rows_unchanged).compile(dialect=dialect)) == expected
