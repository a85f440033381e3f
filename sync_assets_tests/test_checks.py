"""Checks of a table, evaluated directly against real caches after real syncs."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_assets.assets.factory import resources_for
from sync_assets.catalog.loader import load_catalog
from sync_assets.checks import CheckResources, common, sharing, table_checks
from sync_assets.dialects.base import SourceDialect
from sync_assets.resources.database import SqlDatabase
from sync_assets_tests.helpers import (
    BASE_TIME,
    Harness,
    create_source,
    failure_message,
    make_harness,
    order_row,
    orders_table,
    synced,
    upsert_source,
)

ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
ROWS = [order_row(i) for i in range(1, 121)]


def run_checks(harness: Harness, table: str = "orders") -> dict[str, dg.AssetCheckResult]:
    """Evaluate every check of `table`, sharing their connections as the asset op does."""
    catalog = load_catalog(harness.path)
    spec = catalog.table(table)
    databases = resources_for(catalog)
    resources = CheckResources(source=databases[spec.source], cache=databases[catalog.cache])
    results = {}
    with sharing(resources) as shared:
        for check in table_checks(catalog, spec, dg.AssetKey([spec.source, spec.name])):
            result = check.evaluate(shared)
            # Results are yielded from the table's multi-asset op: they must name their check and asset.
            assert (result.asset_key, result.check_name) == (check.spec.asset_key, check.spec.name)
            results[check.spec.name] = result
    return results


def test_checks_share_one_connection_per_database_and_survive_a_failed_statement(
    tmp_path, monkeypatch, make_pg_database
):
    """One login and one reflection per database for all of a table's checks. A statement that
    fails leaves a PostgreSQL transaction aborted: the next check on the same connection must
    still run."""
    source_url, cache_url = make_pg_database(), make_pg_database()
    create_source(source_url, ROWS)
    rules = [{"sql": "SELECT no_such_column FROM {table}", "name": "broken"}, {"row_count": {"min": 1}}]
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**ORDERS, "checks": rules}],
    )
    sync(harness, "mass")
    opened: list[str] = []
    original = SqlDatabase.engine

    def counted(self, *, role, table=None):
        opened.append(role)
        return original(self, role=role, table=table)

    monkeypatch.setattr(SqlDatabase, "engine", counted)
    reflections: list[str] = []
    for name in ("reflect", "cache_table"):
        real = getattr(common, name)
        monkeypatch.setattr(
            common, name, lambda *a, _real=real, _name=name, **k: reflections.append(_name) or _real(*a, **k)
        )
    catalog = load_catalog(harness.path)
    spec = catalog.table("orders")
    databases = resources_for(catalog)
    resources = CheckResources(source=databases[spec.source], cache=databases[catalog.cache])
    outcomes: dict[str, bool | str] = {}
    with sharing(resources) as shared:
        for check in table_checks(catalog, spec, dg.AssetKey([spec.source, spec.name])):
            try:
                outcomes[check.spec.name] = check.evaluate(shared).passed
            except dg.Failure as failure:
                outcomes[check.spec.name] = str(failure.description)
    assert "no_such_column" in str(outcomes.pop("broken"))
    assert outcomes == {"row_count": True, "reconciliation": True, "source_lag": True}
    assert sorted(opened) == ["cache", "source"]
    assert sorted(reflections) == ["cache_table", "reflect"], "each table reflected once for all checks"


def test_the_checks_after_a_sync_reuse_its_logins_and_its_reflection_of_the_source(
    tmp_path, monkeypatch, make_pg_database
):
    """The op that synced a table runs its checks on the sync's engines, whose pooled connections
    spare them a login, and with the source table as the sync reflected it: per materialization,
    one login to the source through SQLAlchemy and one reflection, however many checks read it."""
    source_url, cache_url = make_pg_database(), make_pg_database()
    create_source(source_url, ROWS)
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    made: list[str] = []
    logins: list[str] = []
    original = SqlDatabase.engine

    @contextmanager
    def counted_engine(self, *, role, table=None):
        with original(self, role=role, table=table) as (engine, dialect):
            made.append(role)
            sa.event.listen(engine, "connect", lambda *_: logins.append(role))
            yield engine, dialect

    monkeypatch.setattr(SqlDatabase, "engine", counted_engine)
    reflected: list[str] = []
    real = SourceDialect.reflect_table

    def counted_reflection(self, conn, name, *, schema):
        reflected.append(name)
        return real(self, conn, name, schema=schema)

    monkeypatch.setattr(SourceDialect, "reflect_table", counted_reflection)
    for partition in ("mass", "daily"):
        for seen in (made, logins, reflected):
            seen.clear()
        result = harness.sync("orders", partition)
        evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert evaluations == {"reconciliation": True, "source_lag": True}, partition
        assert sorted(made) == ["cache", "source"], f"{partition}: one engine per database for the op"
        assert logins.count("source") == 1, f"{partition}: the checks used the sync's source connection"
        assert reflected == ["orders"], f"{partition}: the source reflected once, by the sync"

    made.clear()
    reflected.clear()
    assert run_checks(harness)["reconciliation"].passed, "checks run on their own open and reflect themselves"
    assert (sorted(made), reflected) == (["cache", "source"], ["orders"])


def sync(harness: Harness, partition: str) -> None:
    """Sync orders. The step may run the table's checks too, and then fails on a blocking one that
    fails; the sync itself succeeded when the asset was materialized."""
    result = harness.sync("orders", partition)
    assert len(synced(result)) == 1, "the sync did not materialize"
    if not result.success:
        assert "blocking asset check" in failure_message(result)


def value(result: dg.AssetCheckResult, key: str) -> Any:
    return getattr(result.metadata[key], "value", result.metadata[key])


RULES = [
    {"not_null": ["code", "updated_at"]},
    {"not_null": ["note"], "severity": "warn"},
    {"unique": ["id", "code"]},
    {"unique": ["code"]},
    {"accepted_values": {"column": "active", "values": [True, False]}, "name": "active_is_boolean"},
    {"accepted_values": {"column": "code", "values": ["C001", "C002"]}},
    {"accepted_values": {"column": "qty", "values": [-499, -498]}},
    {"accepted_values": {"column": "due", "values": ["2026-01-02", "2026-01-03"]}},
    {"range": {"column": "qty", "min": -500, "max": 500}},
    {"range": {"column": "amount", "min": 0}},
    {"range": {"column": "big_amount", "max": 100_000_000}, "name": "big_amount_below_1e8"},
    {"row_count": {"min": 1, "max": 1000}, "name": "row_count_ok"},
    {"row_count": {"max": 10}, "name": "row_count_small", "severity": "warn"},
    {"sql": "SELECT id, qty FROM {table} WHERE qty >= -400 ORDER BY id", "name": "recent_qty"},
]


def offenders(predicate: Any) -> list[int]:
    return [r["id"] for r in ROWS if predicate(r)]


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql"])
def test_validation_rules(tmp_path, monkeypatch, make_database, cache_kind):
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    create_source(source_url, ROWS)
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**ORDERS, "checks": RULES}],
    )
    before = run_checks(harness)
    assert len(before) == len(RULES) + 2
    for evaluation in before.values():
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert "not synced yet" in evaluation.description

    sync(harness, "mass")
    checks = run_checks(harness)
    passing = {"not_null_code_updated_at", "unique_id_code", "active_is_boolean", "range_qty", "row_count_ok"}
    passing |= {"reconciliation", "source_lag"}
    assert {name for name, e in checks.items() if e.passed} == passing

    expected = {
        "not_null_note": offenders(lambda r: r["note"] is None),
        "accepted_values_code": offenders(lambda r: r["code"] not in ("C001", "C002")),
        "accepted_values_qty": offenders(lambda r: r["qty"] not in (-499, -498)),
        "accepted_values_due": offenders(
            lambda r: r["due"] is not None and r["due"].isoformat() not in ("2026-01-02", "2026-01-03")
        ),
        "range_amount": offenders(lambda r: r["amount"] < 0),
        "big_amount_below_1e8": offenders(lambda r: r["big_amount"] is not None and r["big_amount"] > 10**8),
    }
    for name, ids in expected.items():
        assert value(checks[name], "offending_rows") == len(ids), name
        assert value(checks[name], "sample_keys") == ids[:5], name
    assert 0 < len(expected["range_amount"]) < len(ROWS)

    # Codes repeat every 97 ids: C001..C023 are each held by two rows.
    assert value(checks["unique_code"], "duplicate_groups") == 23
    assert value(checks["unique_code"], "sample_keys") == [1, 2, 3, 4, 5]
    assert value(checks["row_count_small"], "row_count") == 120
    recent = offenders(lambda r: r["qty"] >= -400)
    assert value(checks["recent_qty"], "offending_rows") == len(recent)
    assert value(checks["recent_qty"], "sample_rows") == [{"id": i, "qty": i - 500} for i in recent[:5]]
    assert checks["not_null_note"].severity == dg.AssetCheckSeverity.WARN
    assert checks["range_amount"].severity == dg.AssetCheckSeverity.ERROR
    assert "rows with amount outside" in checks["range_amount"].description


def test_error_rules_block_and_missing_columns_are_named(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, ROWS[:10])
    rules = [
        {"not_null": ["code", "nope"]},
        {"range": {"column": "qty", "max": 0}, "severity": "warn"},
    ]
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**ORDERS, "checks": rules}],
    )
    catalog = load_catalog(harness.path)
    checks = table_checks(catalog, catalog.table("orders"), dg.AssetKey(["src", "orders"]))
    blocking = {check.spec.name: check.spec.blocking for check in checks}
    assert blocking["not_null_code_nope"] is True
    assert blocking["range_qty"] is False

    sync(harness, "mass")
    missing = run_checks(harness)["not_null_code_nope"]
    assert not missing.passed
    assert missing.severity == dg.AssetCheckSeverity.ERROR
    assert "table 'orders'" in missing.description
    assert "column 'nope'" in missing.description and "cache table orders" in missing.description


HOURLY_ROWS = [order_row(i, updated_at=BASE_TIME + timedelta(hours=i)) for i in range(1, 201)]
# The default hourly lookback is 2 h: rows within 2 h of the watermark (ids 198-200) are not settled.
SETTLED = 197


def execute(url: sa.URL, statement: sa.Executable) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(statement)
    engine.dispose()


CACHE_ORDERS = orders_table(sa.MetaData())  # the cache table has the source's columns


@pytest.mark.parametrize(("source_kind", "cache_kind"), [("postgresql", "sqlite"), ("sqlite", "postgresql")])
def test_reconciliation_counts_the_settled_range(
    tmp_path, monkeypatch, make_database, source_kind, cache_kind
):
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    source = create_source(source_url, HOURLY_ROWS)
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])
    sync(harness, "mass")

    checks = run_checks(harness)
    assert set(checks) == {"reconciliation", "source_lag"}, "deep only when asked for"
    check = checks["reconciliation"]
    assert check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert value(check, "source_rows") == value(check, "cache_rows") == SETTLED
    cutoff = BASE_TIME + timedelta(hours=200) - timedelta(hours=2)
    assert value(check, "range") == f"updated_at in [-inf, {cutoff})"

    # A busy source: rows younger than the lookback window are not expected in the cache yet.
    upsert_source(source_url, source, [order_row(500, updated_at=BASE_TIME + timedelta(hours=201))])
    assert run_checks(harness)["reconciliation"].passed

    # A row deleted from the cache behind the sync's back.
    execute(cache_url, sa.delete(CACHE_ORDERS).where(CACHE_ORDERS.c.id == 42))
    check = run_checks(harness)["reconciliation"]
    assert not check.passed
    assert (value(check, "source_rows"), value(check, "cache_rows")) == (SETTLED, SETTLED - 1)
    assert f"the source holds {SETTLED} rows" in check.description

    # After an incremental the range starts where that sync started reading (watermark - lookback).
    sync(harness, "daily")
    check = run_checks(harness)["reconciliation"]
    low = BASE_TIME + timedelta(hours=200) - timedelta(days=2)
    high = BASE_TIME + timedelta(hours=201) - timedelta(hours=2)
    assert value(check, "range") == f"updated_at in [{low}, {high})"
    assert check.passed and value(check, "cache_rows") == 47  # ids 152 to 198


def test_reconciliation_of_a_mass_only_table_compares_totals(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    source = create_source(source_url, ROWS[:30])
    mass_only = {"name": "orders", "source_table": "orders", "primary_key": ["id"]}
    harness = make_harness(
        tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[mass_only]
    )
    sync(harness, "mass")
    checks = run_checks(harness)
    assert set(checks) == {"reconciliation"}, "no lag check without updated_at"
    assert checks["reconciliation"].passed and value(checks["reconciliation"], "range") == "all rows"

    upsert_source(source_url, source, [order_row(999)])
    check = run_checks(harness)["reconciliation"]
    assert not check.passed
    assert (value(check, "source_rows"), value(check, "cache_rows")) == (31, 30)


DEEP = {**ORDERS, "verify": {"deep": True, "segment_rows": 40, "bisect_to_rows": 4}}


@pytest.mark.parametrize(("source_kind", "cache_kind"), [("sqlite", "postgresql"), ("postgresql", "sqlite")])
def test_deep_reconciliation_names_the_changed_key_range(
    tmp_path, monkeypatch, make_database, source_kind, cache_kind
):
    source_url, cache_url = make_database(source_kind), make_database(cache_kind)
    create_source(source_url, HOURLY_ROWS)
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[DEEP])
    sync(harness, "mass")

    check = run_checks(harness)["deep_reconciliation"]
    assert check.passed, check.description
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert value(check, "source_rows") == value(check, "cache_rows") == SETTLED
    assert value(check, "segments") == 5

    # Values changed and a row deleted in the cache behind the sync's back: same row count for one.
    execute(cache_url, sa.update(CACHE_ORDERS).where(CACHE_ORDERS.c.id == 57).values(amount=1, name="edited"))
    execute(cache_url, sa.delete(CACHE_ORDERS).where(CACHE_ORDERS.c.id == 150))
    checks = run_checks(harness)
    check = checks["deep_reconciliation"]
    assert not check.passed
    ranges = value(check, "ranges")
    assert value(check, "differing_ranges") == len(ranges) == 2
    changed, deleted = ranges
    assert changed["first_key"] <= 57 <= changed["last_key"]
    assert changed["source_rows"] == changed["cache_rows"] <= 4
    assert deleted["first_key"] <= 150 <= deleted["last_key"]
    assert deleted["source_rows"] == deleted["cache_rows"] + 1 <= 4
    assert f"{changed['first_key']}..{changed['last_key']}" in check.description
    assert not checks["reconciliation"].passed, "the deleted row also shows in the counts"

    # Far more cache rows in a key range than the segment holds: that range is reported unbisected.
    extra = [order_row(i, updated_at=BASE_TIME) for i in range(1000, 1100)]
    execute(cache_url, sa.insert(CACHE_ORDERS).values(extra))
    check = run_checks(harness)["deep_reconciliation"]
    assert value(check, "ranges")[-1] == {
        "first_key": 161,
        "last_key": None,
        "source_rows": 37,
        "cache_rows": 137,
    }
    assert "161..end (source 37 rows, cache 137)" in check.description


def test_lag_fails_when_the_source_gains_a_row_newer_than_max_lag(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("postgresql"), make_database("sqlite")
    source = create_source(source_url, HOURLY_ROWS[:10])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[{**ORDERS, "max_lag": "1h"}],
    )
    sync(harness, "mass")
    check = run_checks(harness)["source_lag"]
    assert check.passed and value(check, "lag_seconds") == 0
    assert value(check, "max_lag_seconds") == 3600

    newest = HOURLY_ROWS[9]["updated_at"]
    upsert_source(source_url, source, [order_row(11, updated_at=newest + timedelta(minutes=30))])
    assert run_checks(harness)["source_lag"].passed

    upsert_source(source_url, source, [order_row(12, updated_at=newest + timedelta(minutes=90))])
    check = run_checks(harness)["source_lag"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert value(check, "lag_seconds") == 90 * 60
    assert value(check, "cache_max") == str(newest)
    assert value(check, "source_max") == str(newest + timedelta(minutes=90))
    assert "more than the allowed 1:00:00" in check.description


def test_a_rule_named_like_a_built_in_check_is_refused(tmp_path, monkeypatch, make_database):
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=make_database("sqlite"),
        cache_url=make_database("sqlite"),
        tables=[{**ORDERS, "checks": [{"sql": "SELECT 1", "name": "custom"}]}],
    )
    catalog = load_catalog(harness.path)
    # Renamed past the catalog's own validation, which may refuse built-in names already.
    table = catalog.table("orders")
    (rule,) = table.checks
    clashing = table.model_copy(update={"checks": [rule.model_copy(update={"name": "reconciliation"})]})
    with pytest.raises(ValueError, match="two checks are named 'reconciliation'"):
        table_checks(catalog, clashing, dg.AssetKey(["src", "orders"]))


@pytest.mark.parametrize("source_kind", ["sqlite", "postgresql"])
def test_query_sources_are_reconciled_under_their_cache_names(
    tmp_path, monkeypatch, make_database, source_kind
):
    """A query has no declared types: the watermark and the row schema come from its values."""
    source_url, cache_url = make_database(source_kind), make_database("sqlite")
    create_source(source_url, HOURLY_ROWS)
    query = {
        "name": "orders",
        "query": "SELECT id AS order_id, name, qty, updated_at AS changed FROM orders",
        "primary_key": ["order_id"],
        "updated_at": "changed",
        "verify": {"deep": True, "segment_rows": 64, "bisect_to_rows": 8},
    }
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[query])
    sync(harness, "mass")
    checks = run_checks(harness)
    assert all(e.passed for e in checks.values()), {n: e.description for n, e in checks.items()}
    # SQLite hands a query's timestamps over as text, which cannot look back in time: the settled
    # range then ends at the watermark itself.
    settled = SETTLED if source_kind == "postgresql" else 199
    assert value(checks["deep_reconciliation"], "source_rows") == settled

    cache = sa.table("orders", sa.column("order_id"), sa.column("qty"))
    execute(cache_url, sa.update(cache).where(cache.c.order_id == 99).values(qty=0))
    (changed,) = value(run_checks(harness)["deep_reconciliation"], "ranges")
    assert changed["first_key"] <= 99 <= changed["last_key"]


def test_a_defect_in_a_check_warns_without_failing_or_retrying_the_sync(tmp_path, monkeypatch, make_database):
    """A check that raises something unexpected (injected here into the lag check's judgement)
    reports it as a check that could not run: failing the step would make its retries sync again."""
    from sync_assets.checks import lag

    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    create_source(source_url, ROWS)
    harness = make_harness(tmp_path, monkeypatch, source_url=source_url, cache_url=cache_url, tables=[ORDERS])

    def defect(*_args, **_kwargs):
        msg = "boom"
        raise ZeroDivisionError(msg)

    monkeypatch.setattr(lag, "_judge", defect)
    result = harness.sync("orders", "mass")
    assert result.success and len(synced(result)) == 1
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["reconciliation"].passed
    lagged = evaluations["source_lag"]
    assert not lagged.passed and lagged.severity == dg.AssetCheckSeverity.WARN
    assert lagged.description == "could not run: ZeroDivisionError: boom"
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
