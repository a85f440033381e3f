"""Mass, then changes in the source, then daily: the cache equals the source, column for column."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sync_assets_tests.helpers import (
    BASE_TIME,
    create_source,
    make_harness,
    materialization,
    order_row,
    read_rows,
    sync_log_rows,
    upsert_source,
)

PAIRS = [
    ("sqlite", "sqlite"),
    ("postgresql", "postgresql"),
    ("sqlite", "postgresql"),
    ("postgresql", "sqlite"),
    ("duckdb", "duckdb"),
    ("sqlite", "duckdb"),
    ("postgresql", "duckdb"),
    ("duckdb", "postgresql"),
]


@pytest.mark.parametrize(("source_kind", "cache_kind"), PAIRS, ids=[f"{s}-to-{c}" for s, c in PAIRS])
def test_mass_then_daily_matches_source(tmp_path, monkeypatch, make_database, source_kind, cache_kind):
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    table = create_source(source_url, [order_row(i) for i in range(1, 2501)])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[
            {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
        ],
        defaults={"batch_size": 700},
    )

    result = harness.sync("orders", "mass")
    assert result.success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    meta = materialization(result)
    assert meta["dagster/row_count"] == 2500
    assert meta["sync_assets/rows_read"] == 2500
    assert meta["sync_assets/mode"] == "full"
    assert meta["sync_assets/watermark_to"] == str(BASE_TIME + timedelta(seconds=2500, microseconds=2500))

    # Changes after the watermark: 40 updates (one twice-touched) and 30 new rows.
    later = BASE_TIME + timedelta(days=1)
    changed = [order_row(i, updated_at=later + timedelta(seconds=i), version=1) for i in range(100, 2500, 60)]
    added = [order_row(i, updated_at=later + timedelta(minutes=5, seconds=i)) for i in range(2501, 2531)]
    upsert_source(source_url, table, changed + added)

    result = harness.sync("orders", "daily")
    assert result.success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    meta = materialization(result)
    assert meta["sync_assets/mode"] == "incremental"
    assert meta["dagster/row_count"] == 2530
    assert meta["sync_assets/rows_inserted"] == 30
    # The default daily lookback (2 x 1 day) re-reads every row of the last two days: all of them
    # here. Only the 40 changed ones are updated; the others are counted unchanged (issue 10).
    assert meta["sync_assets/rows_read"] == 2530
    assert meta["sync_assets/rows_updated"] == 40
    assert meta["sync_assets/rows_unchanged"] == 2460
    assert meta["sync_assets/watermark_from"] == str(
        BASE_TIME + timedelta(seconds=2500, microseconds=2500) - timedelta(days=2)
    )

    log = sync_log_rows(cache_url, "orders")
    assert [(r["update_type"], r["mode"], r["status"]) for r in log] == [
        ("mass", "full", "succeeded"),
        ("daily", "incremental", "succeeded"),
    ]
    assert log[1]["watermark_to"] == str(added[-1]["updated_at"])
    assert log[1]["rows_read"] == 2530 and log[1]["rows_written"] == 70
    assert [(r["rows_inserted"], r["rows_updated"], r["rows_unchanged"]) for r in log] == [
        (2500, 0, 0),
        (30, 40, 2460),
    ]
    assert all(r["finished_at"] >= r["started_at"] for r in log)


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql"])
def test_hourly_reads_only_the_lookback_window(tmp_path, monkeypatch, make_database, cache_kind):
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    old = BASE_TIME - timedelta(days=30)
    table = create_source(
        source_url, [order_row(i, updated_at=old + timedelta(minutes=i)) for i in range(1, 1001)]
    )
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[
            {
                "name": "orders",
                "source_table": "orders",
                "primary_key": ["id"],
                "updated_at": "updated_at",
                "lookback": {"hourly": "30m"},
            }
        ],
    )
    assert harness.sync("orders", "mass").success
    watermark = old + timedelta(minutes=1000)

    # A row committed late, stamped 20 minutes below the watermark (inside the lookback window),
    # and a row stamped below the window: only the first is picked up by the hourly sync.
    late = order_row(5, updated_at=watermark - timedelta(minutes=20), version=2)
    too_old = order_row(6, updated_at=watermark - timedelta(hours=2), version=2)
    fresh = order_row(7, updated_at=watermark + timedelta(minutes=10), version=3)
    upsert_source(source_url, table, [late, too_old, fresh])

    result = harness.sync("orders", "hourly")
    assert result.success
    meta = materialization(result)
    # Window [watermark - 30 min, max]: rows 970..1000 (31 rows) + the late row + the fresh row.
    assert meta["sync_assets/rows_read"] == 33
    assert meta["sync_assets/watermark_from"] == str(watermark - timedelta(minutes=30))
    cache = {row[0]: row for row in read_rows(cache_url, "orders")}
    source = {row[0]: row for row in read_rows(source_url, "orders")}
    assert cache[5] == source[5] and cache[7] == source[7]
    assert cache[6] != source[6], "a row below the lookback window is left for the next mass sync"

    # Touched again inside the window after that sync: the next hourly picks up the new version.
    again = order_row(7, updated_at=watermark + timedelta(minutes=11), version=4)
    upsert_source(source_url, table, [again])
    assert harness.sync("orders", "hourly").success
    assert {row[0]: row for row in read_rows(cache_url, "orders")}[7] == read_rows(source_url, "orders")[6]


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_direct_copy_matches_the_general_path(tmp_path, monkeypatch, make_database, kind):
    """Server-side copies (binary COPY pipe, ATTACH + INSERT SELECT) give the same rows and column
    types as the polars path, in full and incremental syncs."""
    import sqlalchemy as sa

    def column_types(url):
        engine = sa.create_engine(url)
        types = [(c["name"], str(c["type"])) for c in sa.inspect(engine).get_columns("orders")]
        engine.dispose()
        return types

    outcomes = {}
    for direct in (True, False):
        source_url, cache_url = make_database(kind), make_database(kind)
        table = create_source(source_url, [order_row(i) for i in range(1, 1201)])
        if kind == "sqlite":  # decimals wider than SQLite keeps exactly take the general path
            engine = sa.create_engine(source_url)
            with engine.begin() as conn:
                conn.execute(sa.text("ALTER TABLE orders DROP COLUMN big_amount"))
            engine.dispose()
            table = sa.Table("orders", sa.MetaData(), autoload_with=sa.create_engine(source_url))
        spec = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
        harness = make_harness(
            tmp_path,
            monkeypatch,
            source_url=source_url,
            cache_url=cache_url,
            tables=[{**spec, "direct_copy": direct}],
        )
        result = harness.sync("orders", "mass")
        assert result.success
        messages = [entry.user_message for entry in harness.instance.all_logs(result.run_id)]
        assert any("rows copied" in m for m in messages) == direct
        later = BASE_TIME + timedelta(days=1)
        rows = [order_row(i, updated_at=later, version=2) for i in (5, 600, 1300)]
        if kind == "sqlite":
            rows = [{k: v for k, v in r.items() if k != "big_amount"} for r in rows]
        upsert_source(source_url, table, rows)
        result = harness.sync("orders", "daily")
        assert result.success
        assert materialization(result)["sync_assets/rows_inserted"] == 1
        assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
        outcomes[direct] = (
            read_rows(cache_url, "orders"),
            column_types(cache_url),
            [r["watermark_to"] for r in sync_log_rows(cache_url)],
        )
    assert outcomes[True] == outcomes[False]


def test_postgresql_full_reload_keeps_views_and_grants_on_the_cache_table(
    tmp_path, monkeypatch, make_database
):
    """A plain cache table is reloaded by a rename swap; one that views or grants depend on is
    reloaded in place, and both keep their rows, key, indexes and dependants."""
    import sqlalchemy as sa

    source_url, cache_url = make_database("postgresql"), make_database("postgresql")
    table = create_source(source_url, [order_row(i) for i in range(1, 301)])
    spec = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    assert harness.sync("orders", "mass").success
    engine = sa.create_engine(cache_url)

    def shape():
        inspector = sa.inspect(engine)
        return inspector.get_pk_constraint("orders"), sorted(
            i["name"] for i in inspector.get_indexes("orders")
        )

    def oid():
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT 'orders'::regclass::oid")).scalar_one()

    before, first = shape(), oid()
    upsert_source(source_url, table, [order_row(i, version=3) for i in range(1, 11)])
    assert harness.sync("orders", "mass").success
    assert shape() == before and oid() != first, "swapped in as a new table with the same key and indexes"
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")

    with engine.begin() as conn:
        conn.execute(sa.text("CREATE VIEW active_orders AS SELECT id, name FROM orders WHERE active"))
        conn.execute(sa.text("GRANT SELECT ON orders TO PUBLIC"))
    upsert_source(source_url, table, [order_row(i, version=4) for i in range(11, 21)])
    swapped = oid()
    assert harness.sync("orders", "mass").success
    assert shape() == before and oid() == swapped, "reloaded in place: the view and the grant survive"
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM active_orders")).scalar_one() > 0
        grants = conn.execute(
            sa.text("SELECT relacl::text FROM pg_class WHERE relname = 'orders'")
        ).scalar_one()
    assert "=r/" in grants
    engine.dispose()


def test_sqlite_full_reload_keeps_a_view_on_the_cache_table(tmp_path, monkeypatch, make_database):
    """SQLite -> SQLite copies inside SQLite; a view on the cache table makes the reload run in place."""
    import sqlalchemy as sa

    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 201)])
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders DROP COLUMN big_amount"))
    engine.dispose()
    spec = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    assert harness.sync("orders", "mass").success
    cache = sa.create_engine(cache_url)
    with cache.begin() as conn:
        conn.execute(sa.text("CREATE VIEW active_orders AS SELECT id, name FROM orders WHERE active"))
    for _ in range(2):
        assert harness.sync("orders", "mass").success
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    with cache.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM active_orders")).scalar_one() > 0
        indexes = conn.execute(
            sa.text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'orders'")
        )
        assert "ix_orders_updated_at" in {row[0] for row in indexes}
    cache.dispose()


@pytest.mark.parametrize("batch_size", [50_000, 97])
def test_arrow_reader_matches_the_row_reader(tmp_path, monkeypatch, make_database, batch_size):
    """PostgreSQL sources read through ADBC's Arrow batches give the same cache as SQLAlchemy rows,
    at any batch boundary, with NULL-heavy and exact-decimal columns."""
    import sqlalchemy as sa

    outcomes = {}
    for arrow in (True, False):
        source_url, cache_url = make_database("postgresql"), make_database("sqlite")
        table = create_source(source_url, [order_row(i) for i in range(1, 701)])
        spec = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
        harness = make_harness(
            tmp_path,
            monkeypatch,
            source_url=source_url,
            cache_url=cache_url,
            tables=[{**spec, "arrow_read": arrow, "batch_size": batch_size}],
        )
        assert harness.sync("orders", "mass").success
        upsert_source(
            source_url,
            table,
            [order_row(i, updated_at=BASE_TIME + timedelta(days=1), version=5) for i in (3, 800)],
        )
        assert harness.sync("orders", "daily").success
        assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
        engine = sa.create_engine(cache_url)
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text("SELECT typeof(amount), typeof(big_amount), updated_at FROM orders WHERE id = 3")
            ).one()
        engine.dispose()
        outcomes[arrow] = (read_rows(cache_url, "orders"), tuple(stored))
    assert outcomes[True] == outcomes[False]


def test_a_postgresql_reload_is_written_frozen(tmp_path, monkeypatch, make_database):
    """The fresh table of a PostgreSQL-to-PostgreSQL reload is loaded with COPY FREEZE: its rows
    are frozen at the commit, so the first reads after it (checks, the next upsert) set no hint bits."""
    import sqlalchemy as sa

    source_url, cache_url = make_database("postgresql"), make_database("postgresql")
    create_source(source_url, [order_row(i) for i in range(1, 3001)])
    spec = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[spec])
    for _ in range(2):  # the first load creates the table; the second swaps in a fresh one
        result = harness.sync("orders", "mass")
        assert result.success
        messages = [entry.user_message for entry in harness.instance.all_logs(result.run_id)]
        assert any("rows copied between servers" in m for m in messages)
        engine = sa.create_engine(cache_url)
        with engine.begin() as conn:
            try:
                conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_visibility"))
            except sa.exc.DBAPIError:
                pytest.skip("the pg_visibility extension is not available on this server")
            pages = conn.execute(
                sa.text("SELECT pg_relation_size('orders') / current_setting('block_size')::int")
            ).scalar_one()
            visible, frozen = conn.execute(sa.text("SELECT * FROM pg_visibility_map_summary('orders')")).one()
        engine.dispose()
        # Pages filled by one COPY batch get their visibility-map bits at once (PostgreSQL 14+);
        # without FREEZE no page is all-frozen until a VACUUM. Every row is frozen either way.
        assert pages > 10 and visible == frozen and frozen >= pages // 2, (pages, visible, frozen)
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")


def test_a_whole_sqlite_table_is_copied_in_the_form_sqlite_transfers_undecoded(
    tmp_path, monkeypatch, make_database
):
    """`INSERT INTO t SELECT * FROM s` (SQLite's transfer optimization) for a table copied as it
    is; renamed columns keep the explicit column lists. Both give the source's rows exactly."""
    import sqlalchemy as sa

    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, [order_row(i) for i in range(1, 501)])
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders DROP COLUMN big_amount"))  # wider than SQLite keeps exactly
    engine.dispose()
    spec = {"source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
    tables = [{"name": "orders", **spec}, {"name": "renamed", **spec, "columns": {"code": "order_code"}}]
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=tables)
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()))

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        assert harness.sync("orders", "mass").success
        whole = [s for s in statements if s.startswith("INSERT INTO main.orders__sync_new")]
        statements.clear()
        assert harness.sync("renamed", "mass").success
        renamed = [s for s in statements if s.startswith("INSERT INTO main.renamed__sync_new")]
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)

    assert whole == ["INSERT INTO main.orders__sync_new SELECT * FROM sync_source.orders"]
    assert len(renamed) == 1 and "(id, order_code, name," in renamed[0]
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")
    cached = [tuple(r) for r in read_rows(cache_url, "renamed")]
    assert cached == read_rows(source_url, "orders")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_fast_paths_match_the_general_path_on_empty_and_wide_null_heavy_tables(
    tmp_path, monkeypatch, make_database, kind
):
    """The server-side copies against the polars path, with batches of 1,000: an empty table, and a
    62-column table whose values are nine-tenths NULL, across batch boundaries."""
    import random
    from datetime import date, datetime
    from decimal import Decimal

    import sqlalchemy as sa

    kinds = [sa.Integer, sa.Numeric(12, 3), sa.Text, sa.Date, sa.Boolean, sa.Double]
    columns = [sa.Column(f"c{i:02d}", kinds[i % len(kinds)]) for i in range(60)]
    values = [
        lambda n: n,
        lambda n: Decimal(n) / 8,
        lambda n: f"v{n}",
        lambda n: date(2026, 1, 1 + n % 28),
        lambda n: n % 2 == 0,
        lambda n: n / 3,
    ]
    chance = random.Random(7)
    rows = [
        {
            "id": n,
            "updated_at": datetime(2026, 2, 1) + timedelta(seconds=n),
            **{
                c.name: values[i % len(kinds)](n) if chance.random() < 0.1 else None
                for i, c in enumerate(columns)
            },
        }
        for n in range(1, 2501)
    ]
    outcomes = {}
    for direct in (True, False):
        source_url, cache_url = make_database(kind), make_database(kind)
        engine = sa.create_engine(source_url)
        metadata = sa.MetaData()
        for name in ("wide", "vacant"):
            sa.Table(
                name,
                metadata,
                sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
                sa.Column("updated_at", sa.DateTime, nullable=False),
                *[c._copy() for c in columns],
            )
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(metadata.tables["wide"].insert(), rows)
        engine.dispose()
        spec = {"primary_key": ["id"], "updated_at": "updated_at", "direct_copy": direct}
        tables = [{"name": n, "source_table": n, **spec} for n in ("wide", "vacant")]
        harness = make_harness(
            tmp_path,
            monkeypatch,
            source_url=source_url,
            cache_url=cache_url,
            tables=tables,
            defaults={"batch_size": 1000},
        )
        for name in ("wide", "vacant"):
            result = harness.sync(name, "mass")
            assert result.success
            messages = [entry.user_message for entry in harness.instance.all_logs(result.run_id)]
            assert any("rows copied" in m for m in messages) == direct
        cache = sa.create_engine(cache_url)
        inspector = sa.inspect(cache)
        types = {
            n: [(c["name"], str(c["type"])) for c in inspector.get_columns(n)] for n in ("wide", "vacant")
        }
        cache.dispose()
        assert read_rows(cache_url, "wide") == read_rows(source_url, "wide")
        assert read_rows(cache_url, "vacant") == []
        outcomes[direct] = (read_rows(cache_url, "wide"), types)
    assert outcomes[True] == outcomes[False]
