"""A sync that fails leaves the cache exactly as it was, says why, and the next one recovers."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from sync_assets_tests.helpers import (
    BASE_TIME,
    create_source,
    failure_message,
    make_harness,
    order_row,
    orders_table,
    read_rows,
    staging_tables,
    sync_log_rows,
    upsert_source,
)

ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}


def _poison(url: sa.URL, row_id: int) -> None:
    """SQLite keeps whatever it is given: a text value in an integer column, as legacy data has."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET qty = 'twelve' WHERE id = :id"), {"id": row_id})
    engine.dispose()


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql", "duckdb"])
@pytest.mark.parametrize("partition", ["mass", "daily"])
def test_bad_value_mid_load_leaves_cache_unchanged(
    tmp_path, monkeypatch, make_database, cache_kind, partition
):
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    table = create_source(source_url, [order_row(i) for i in range(1, 3001)])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[ORDERS],
        defaults={"batch_size": 500},
    )
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")

    changed = [
        order_row(i, updated_at=BASE_TIME + timedelta(days=1, seconds=i), version=1) for i in range(1, 3001)
    ]
    upsert_source(source_url, table, changed)
    _poison(source_url, 2200)  # in the fifth batch of 500

    result = harness.sync("orders", partition)
    assert not result.success
    message = failure_message(result)
    assert "table 'orders': column 'qty': source value 'twelve' cannot be read as Int64" in message
    assert read_rows(cache_url, "orders") == before, "the target keeps exactly its old rows"
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded", "failed"]
    assert log[-1]["watermark_to"] is None and log[-1]["finished_at"] is not None
    assert "read phase" in log[-1]["error"] and "'qty'" in log[-1]["error"]
    assert log[-1]["rows_read"] == 2000, "the batches staged before the bad one"
    assert not staging_tables(cache_url)

    # The next run, with the data fixed, picks everything up as if nothing had happened.
    upsert_source(source_url, table, [changed[2199]])
    assert harness.sync("orders", partition).success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql", "duckdb"])
def test_failure_in_the_swap_rolls_back(tmp_path, monkeypatch, make_database, cache_kind):
    """A key that is not unique in the source fails the reload: nothing is half-replaced. The key
    is built after the load on PostgreSQL (the swap), during it elsewhere (the load)."""
    source_url, cache_url = make_database("postgresql"), make_database(cache_kind)
    table = create_source(source_url, [order_row(i) for i in range(1, 1001)], primary_key=False)
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    assert harness.sync("orders", "mass").success
    before = read_rows(cache_url, "orders")

    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.update(table).values(qty=1))
        conn.execute(table.insert(), [order_row(500)])  # a second row with key 500
    engine.dispose()

    result = harness.sync("orders", "mass")
    assert not result.success
    message = failure_message(result)
    assert "table 'orders': the source holds duplicate (or NULL) primary key values (id)" in message
    assert read_rows(cache_url, "orders") == before
    log = sync_log_rows(cache_url, "orders")
    phase = "swap" if cache_kind == "postgresql" else "load"
    assert log[-1]["status"] == "failed" and log[-1]["error"].startswith(f"{phase} phase: table 'orders'")
    assert not staging_tables(cache_url)


def test_swapped_out_table_left_by_a_crash_is_dropped_by_the_next_mass(tmp_path, monkeypatch, make_database):
    """The SQLite swap renames the old table and drops it after the commit; a process killed in
    between leaves `<table>__sync_old` behind, which the next mass sync removes."""
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 301)])
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    assert harness.sync("orders", "mass").success
    engine = sa.create_engine(cache_url)
    assert "orders__sync_old" not in sa.inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders__sync_old AS SELECT * FROM orders"))

    assert harness.sync("orders", "mass").success
    assert "orders__sync_old" not in sa.inspect(engine).get_table_names()
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    engine.dispose()


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql", "duckdb"])
def test_null_key_in_the_source_fails_the_load_instead_of_getting_a_made_up_key(
    tmp_path, monkeypatch, make_database, cache_kind
):
    """A source without a key constraint can hold a NULL key; a SQLite rowid key would silently
    invent one, so integer keys are declared BIGINT there and the NULL is refused."""
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    create_source(source_url, [order_row(1), {**order_row(2), "id": None}], primary_key=False)
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    result = harness.sync("orders", "mass")
    assert not result.success
    assert "the source holds duplicate (or NULL) primary key values (id)" in failure_message(result)
    assert [r["status"] for r in sync_log_rows(cache_url, "orders")] == ["failed"]


def test_a_failure_after_the_commit_never_turns_a_succeeded_attempt_into_a_failed_one(make_database):
    """Clean-up runs after the commit; if it fails, sync_log must still say what happened to the data."""
    from sync_assets.sync import audit

    engine = sa.create_engine(make_database("sqlite"))
    audit.ensure_table(engine)
    with engine.begin() as conn:
        attempt = audit.start(
            conn,
            table="orders",
            target="orders",
            source="src",
            update_type="mass",
            run_id="r",
            retention_days=9,
        )
        assert attempt is not None
        outcome = audit.Outcome("full", 3, 3, 3, 0, 0, None, "2026-01-01 00:00:00")
        audit.succeed(conn, attempt, outcome)
    with engine.begin() as conn:
        audit.fail(conn, attempt, error="cleanup phase: database is locked", mode="full", rows_read=3)
    (row,) = sync_log_rows(engine.url, "orders")
    assert row["status"] == "succeeded" and row["error"] is None
    engine.dispose()


def test_an_attempt_this_process_could_not_close_does_not_block_its_next_sync(
    tmp_path, monkeypatch, make_database
):
    """A sync whose failure could not be recorded (the cache was down) leaves its row `running`
    with this process's pid; the process's next sync of the table closes it as abandoned instead
    of waiting for itself (execute_in_process runs every step in this process)."""
    from sync_assets.sync import audit

    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 11)])
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    engine = sa.create_engine(cache_url)
    audit.ensure_table(engine)
    with engine.begin() as conn:  # as an attempt of this process left it
        left = audit.start(
            conn,
            table="orders",
            target="orders",
            source="src",
            update_type="mass",
            run_id="r",
            retention_days=9,
        )
    engine.dispose()
    assert harness.sync("orders", "mass").success
    log = sync_log_rows(cache_url, "orders")
    assert [(r["id"], r["status"]) for r in log] == [(left, "failed"), (left + 1, "succeeded")]
    assert log[0]["error"].startswith("abandoned")


def _generate_pg_orders(url: sa.URL, rows: int) -> None:
    """`rows` orders generated inside PostgreSQL, plus a switch that makes the source query fail."""
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    orders_table(metadata)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (id, code, name, amount, qty, updated_at) "
                "SELECT i, 'K' || i % 100, 'row ' || i, i / 100.0, i % 1000, "
                "timestamp '2026-04-01' + i * interval '1 second' FROM generate_series(1, :rows) i"
            ),
            {"rows": rows},
        )
        conn.execute(sa.text("CREATE TABLE poison (at_id bigint)"))
        conn.execute(sa.text("INSERT INTO poison VALUES (0)"))
    engine.dispose()


def _source_copy_sessions(url: sa.URL) -> int:
    """Sessions of the source side of a direct copy still open on the server."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sync_assets source copy'"
            )
        ).scalar_one()
    engine.dispose()
    return count


def test_a_source_error_mid_copy_between_postgresql_servers_leaves_the_cache_unchanged(
    tmp_path, monkeypatch, make_database
):
    """The source side of a direct copy runs on its own thread and connection; its error reaches
    the sync after 40,000 rows have streamed, and the cache transaction rolls back."""
    source_url, cache_url = make_database("postgresql"), make_database("postgresql")
    _generate_pg_orders(source_url, 60_000)
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE VIEW orders_view AS SELECT id, code, amount, updated_at, "
                "1 / (id - (SELECT at_id FROM poison)) AS ratio FROM orders"
            )
        )
    spec = {
        "name": "orders",
        "source_table": "orders_view",
        "primary_key": ["id"],
        "updated_at": "updated_at",
    }
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    first = harness.sync("orders", "mass")
    assert first.success
    assert any(
        "rows copied between servers" in e.user_message for e in harness.instance.all_logs(first.run_id)
    )
    before = read_rows(cache_url, "orders")
    assert len(before) == 60_000

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE poison SET at_id = 40000"))
        conn.execute(sa.text("UPDATE orders SET code = 'changed'"))
    engine.dispose()
    result = harness.sync("orders", "mass")

    assert not result.success
    message = failure_message(result)
    assert "table 'orders'" in message and "division by zero" in message, message
    # The source failed while rows streamed into the fresh table: the copy, not the swap.
    assert "table 'orders' (mass): copy phase: " in message, message
    assert read_rows(cache_url, "orders") == before, "the target keeps exactly its old rows"
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["succeeded", "failed"]
    assert log[-1]["error"].startswith("copy phase: ") and "division by zero" in log[-1]["error"]
    assert "orders__sync_new" not in sa.inspect(sa.create_engine(cache_url)).get_table_names()
    assert _source_copy_sessions(source_url) == 0


# Every table the sync creates in the cache refuses its 100,000th row: a cache-side error at a
# known row of a 400,000-row copy, instead of a timeout racing the copy.
_FAIL_AT_ROW = """
CREATE SEQUENCE cache_rows;
CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF nextval('cache_rows') = 100000 THEN
    RAISE EXCEPTION 'the cache refuses row %', NEW.id;
  END IF;
  RETURN NEW;
END $$;
CREATE FUNCTION arm_new_tables() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE created record;
BEGIN
  FOR created IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP
    IF created.object_identity <> 'public.sync_log' THEN
      EXECUTE format('CREATE TRIGGER refuse_row BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION refuse_row()',
                     created.object_identity);
    END IF;
  END LOOP;
END $$;
CREATE EVENT TRIGGER arm_new_tables ON ddl_command_end EXECUTE FUNCTION arm_new_tables();
"""


def test_a_cache_error_mid_copy_stops_the_source_side_too(tmp_path, monkeypatch, make_database):
    """The cache refuses a row in the middle of a server-to-server copy: the load fails in its copy
    phase, the source side's thread ends and its connection closes, nothing is left in the cache.
    (psycopg learns of an error in a COPY only when the COPY ends.)"""
    source_url, cache_url = make_database("postgresql"), make_database("postgresql")
    _generate_pg_orders(source_url, 400_000)
    engine = sa.create_engine(cache_url)
    with engine.begin() as conn:
        conn.connection.driver_connection.execute(_FAIL_AT_ROW)  # no parameters: % stays as written
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[ORDERS],
        connection={"retries": {"max_retries": 0}},
    )

    result = harness.sync("orders", "mass")

    assert not result.success
    assert "the cache refuses row" in failure_message(result)
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["failed"]
    assert log[-1]["error"].startswith("copy phase: "), log[-1]["error"]
    tables = sa.inspect(engine).get_table_names()
    assert "orders" not in tables and "orders__sync_new" not in tables
    assert _source_copy_sessions(source_url) == 0
    engine.dispose()
