"""Catalog mistakes fail when definitions load, naming the file, the line and the table."""

from __future__ import annotations

import textwrap

import dagster as dg
import pytest

from sync_assets.assets.factory import build_definitions
from sync_assets.catalog.loader import load_catalog
from sync_assets.errors import CatalogError

GOOD = """\
connections:
  jde:   {url: "${JDE_URL}", password: "${JDE_PASSWORD}"}
  cache: {url: "sqlite:///cache.sqlite"}
cache: cache
tables:
  - name: work_orders
    source: jde
    source_table: F4801
    source_schema: PRODDTA
    target_table: work_orders
    primary_key: [order_id]
    updated_at: last_update_dt
    columns: {WADOCO: order_id}
    batch_size: 50000
  - name: lots
    source: jde
    source_table: F4108
    primary_key: [lot_number]
"""


def _load(tmp_path, text: str):
    path = tmp_path / "catalog.yaml"
    path.write_text(textwrap.dedent(text))
    return load_catalog(path), path


def _error(tmp_path, text: str) -> str:
    with pytest.raises(CatalogError) as info:
        _load(tmp_path, text)
    return str(info.value)


def test_the_documented_example_loads_without_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("JDE_URL", raising=False)
    monkeypatch.delenv("JDE_PASSWORD", raising=False)
    catalog, _ = _load(tmp_path, GOOD)
    defs = build_definitions(catalog)
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"jde/work_orders", "jde/lots"}
    assert catalog.tables[1].update_types[0].value == "mass" and len(catalog.tables[1].update_types) == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("    batch_size: 50000", "    batch_size: lots"),
            ":14: table 'work_orders': batch_size: Input should be a valid integer",
        ),
        (
            ("    batch_size: 50000", "    batch_sise: 50000"),
            ":14: table 'work_orders': batch_sise: unknown key",
        ),
        (
            ("    source: jde\n    source_table: F4108", "    source: erp\n    source_table: F4108"),
            ":16: table 'lots': source: unknown connection 'erp' (known: cache, jde)",
        ),
        (
            ("  - name: lots", "  - name: work_orders"),
            ":15: table 'work_orders': name: duplicate table name 'work_orders' (first at tables[0])",
        ),
        (("cache: cache", "cache: cash"), ":4: cache: unknown connection 'cash'"),
        (
            ("    primary_key: [lot_number]", "    primary_key: []"),
            ":18: table 'lots': primary_key: List should have at least 1 item",
        ),
        (("    source_table: F4108", "    query: SELECT 1"), None),
        (
            ("    source_table: F4801\n", "    source_table: F4801\n    query: SELECT * FROM F4801\n"),
            ":6: table 'work_orders': give exactly one of `source_table`, `query`, `endpoint` or `files`",
        ),
        (
            ('{url: "sqlite:///cache.sqlite"}', '{url: "postgresql://u:hunter2@db/cache"}'),
            ":3: connections.cache.url: the URL holds a literal password",
        ),
        (
            ('password: "${JDE_PASSWORD}"', 'password: "hunter2"'),
            ":2: connections.jde.password: a password must come from the environment",
        ),
        (("  - name: lots", "  - name: lots-2"), ":15: table 'lots-2': name: String should match pattern"),
        (
            ("    target_table: work_orders", "    target_table: sync_log"),
            ":10: table 'work_orders': target_table: 'sync_log' is the audit table",
        ),
        (
            ("    updated_at: last_update_dt", "    updated_at: last_update_dt\n    updated_at: x"),
            ":13: duplicate key 'updated_at'",
        ),
        (("tables:", "tables: [\n"), ":"),
    ],
    ids=[
        "wrong-type",
        "unknown-key",
        "unknown-connection",
        "duplicate-name",
        "unknown-cache",
        "empty-key",
        "query-ok",
        "table-and-query",
        "literal-password-in-url",
        "literal-password",
        "bad-identifier",
        "reserved-target",
        "duplicate-yaml-key",
        "broken-yaml",
    ],
)
def test_structural_mistakes_name_file_line_and_table(tmp_path, change, expected):
    old, new = change
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    if expected is None:
        _load(tmp_path, text)
        return
    message = _error(tmp_path, text)
    assert str(tmp_path / "catalog.yaml") in message
    assert expected in message, message
    assert "hunter2" not in message


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace("    batch_size: 50000", "    batch_size: -1").replace(
        "source: jde\n    source_table: F4108", "source: nope\n    source_table: F4108"
    )
    message = _error(tmp_path, text)
    assert len(message.splitlines()) == 1  # pydantic errors come first; cross-references after a valid shape
    text = GOOD.replace("cache: cache", "cache: cash").replace(
        "source: jde\n    source_table: F4108", "source: nope\n    source_table: F4108"
    )
    assert len(_error(tmp_path, text).splitlines()) == 2


def test_missing_catalog_file_is_named(tmp_path):
    with pytest.raises(CatalogError, match=r"missing\.yaml: cannot read the table catalog"):
        load_catalog(tmp_path / "missing.yaml")


def test_lookback_and_defaults(tmp_path):
    text = (
        GOOD.replace("    batch_size: 50000", "    lookback: {hourly: 90m, daily: 1d}")
        + "defaults:\n  lookback_multiplier: 3\n"
    )
    catalog, _ = _load(tmp_path, text)
    from datetime import timedelta

    from sync_assets.catalog.models import UpdateType

    orders = catalog.tables[0]
    assert orders.lookback_for(UpdateType.HOURLY, catalog.defaults) == timedelta(minutes=90)
    assert orders.lookback_for(UpdateType.DAILY, catalog.defaults) == timedelta(days=1)
    assert catalog.tables[1].lookback_for(UpdateType.DAILY, catalog.defaults) == timedelta(days=3)
    assert catalog.batch_size(catalog.tables[1]) == 50_000


def test_connection_timeouts_default_and_reach_the_resource(tmp_path):
    """A remote ERP connection gets a connect timeout and keep-alive unless the catalog says
    otherwise (sync_assets issue 10), and the resource carries them to the engine."""
    text = GOOD.replace(
        '  jde:   {url: "${JDE_URL}", password: "${JDE_PASSWORD}"}',
        '  jde:   {url: "${JDE_URL}", password: "${JDE_PASSWORD}", connect_timeout: 5s, keepalive: 2m}',
    )
    catalog, _ = _load(tmp_path, text)
    resources = build_definitions(catalog).resources
    assert (resources["jde"].connect_timeout, resources["jde"].keepalive) == (5.0, 120.0)
    assert (resources["cache"].connect_timeout, resources["cache"].keepalive) == (30.0, 60.0)


def test_a_connect_timeout_under_a_second_is_refused(tmp_path):
    text = GOOD.replace(
        '  cache: {url: "sqlite:///cache.sqlite"}',
        '  cache: {url: "sqlite:///c.sqlite", connect_timeout: 0s}',
    )
    assert "catalog.yaml:3: connections.cache.connect_timeout: must be at least 1s" in _error(tmp_path, text)


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("oracle+oracledb://sync@erp/?service_name=JDE", "oracle"),
        ("sybase+pyodbc://sync@cms", "sybase"),
        ("mssql+pyodbc://sync@sap/cache?driver=ODBC+Driver+18+for+SQL+Server", None),
        ("postgresql+psycopg://sync@localhost/cache", None),
        ("${CACHE_URL}", None),  # the scheme is not known until a sync connects
    ],
)
def test_a_source_only_database_named_as_the_cache_is_refused_at_load(tmp_path, url, refused):
    text = GOOD.replace('cache: {url: "sqlite:///cache.sqlite"}', f'cache: {{url: "{url}"}}')
    if refused is None:
        _load(tmp_path, text)
        return
    message = _error(tmp_path, text)
    assert f"catalog.yaml:3: connections.cache.url: {refused} is a source-only database" in message, message
    assert "(caches: duckdb, mssql, postgresql, sqlite)" in message


def test_a_source_only_cache_behind_a_placeholder_is_refused_when_a_sync_connects(tmp_path, monkeypatch):
    from sync_assets.errors import SyncError
    from sync_assets.resources.database import SqlDatabase

    monkeypatch.setenv("CACHE_URL", "oracle+oracledb://sync@erp/?service_name=JDE")
    database = SqlDatabase(name="erp", url="${CACHE_URL}")
    refused = pytest.raises(SyncError, match="oracle is a source-only database and cannot be the cache")
    with refused, database.engine(role="cache", table="orders"):
        pass
    with database.engine(role="source", table="orders") as (engine, dialect):
        assert dialect.name == "oracle" and engine.dialect.name == "oracle"


def test_a_column_can_carry_a_description_with_or_without_a_rename(tmp_path):
    text = GOOD.replace(
        "    columns: {WADOCO: order_id}",
        "    columns:\n"
        "      WADOCO: {name: order_id, description: Document (order number)}\n"
        "      WAMCU: {description: Business unit}\n"
        "      WALITM: item_number\n"
        "    column_descriptions: {item_number: Second item number}",
    )
    catalog, _ = _load(tmp_path, text)
    orders = catalog.tables[0]
    assert orders.columns == {"WADOCO": "order_id", "WAMCU": "WAMCU", "WALITM": "item_number"}
    assert orders.column_descriptions == {
        "order_id": "Document (order number)",
        "WAMCU": "Business unit",
        "item_number": "Second item number",
    }


def test_a_column_entry_with_an_unknown_key_is_refused_naming_it(tmp_path):
    message = _error(tmp_path, GOOD.replace("{WADOCO: order_id}", "{WADOCO: {name: order_id, descr: x}}"))
    assert "column 'WADOCO': unknown key 'descr'" in message and "work_orders" in message
