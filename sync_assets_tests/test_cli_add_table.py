"""`sync-assets add-table` (issue 13): catalog entries scaffolded from a source's own schema, that
load, sync and round-trip; JDE conventions from JDE's naming rules and its data dictionary."""

from __future__ import annotations

import textwrap
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from sync_assets.catalog.append import append_items
from sync_assets.catalog.loader import load_catalog
from sync_assets.catalog.scaffold import friendly_name, snake_case
from sync_assets.errors import CatalogError
from sync_assets_tests.cli import run_cli
from sync_assets_tests.helpers import ENGINES, Harness, failure_message, free_port, materialization

CATALOG = """\
# The ERP cache. Comments like this one must survive --write.
connections:
  src: {url: "${SYNC_TEST_SOURCE_URL}"}   # the legacy source
  cache: {url: "${SYNC_TEST_CACHE_URL}"}
cache: cache
tables:   # scaffolded by add-table
defaults:
  batch_size: 100   # small batches for the tests
"""
T0 = datetime(2026, 3, 1, 8, 0, 0)


def _catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: sa.URL, cache: sa.URL) -> Path:
    monkeypatch.setenv("SYNC_TEST_SOURCE_URL", source.render_as_string(hide_password=False))
    monkeypatch.setenv("SYNC_TEST_CACHE_URL", cache.render_as_string(hide_password=False))
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return path


def _add(catalog: Path, *args: str):
    return run_cli("add-table", "src", *args, catalog=catalog, instance=None)


def _plain_tables(url: sa.URL) -> dict[str, list[dict[str, Any]]]:
    """customers (a primary key), order_lines (a unique index only), audit_trail (neither)."""
    metadata = sa.MetaData()
    customers = sa.Table(
        "customers",
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(40)),
        sa.Column("balance", sa.Numeric(12, 2)),
        sa.Column("created_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
    )
    lines = sa.Table(
        "order_lines",
        metadata,
        sa.Column("order_id", sa.Integer, nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("qty", sa.Integer),
        sa.Column("modified_at", sa.DateTime),
        sa.Index("order_lines_key", "order_id", "line", unique=True),
    )
    audit = sa.Table("audit_trail", metadata, sa.Column("message", sa.Text), sa.Column("logged", sa.DateTime))
    rows = {
        "customers": [
            {
                "id": i,
                "name": f"Customer {i} ü",
                "balance": Decimal(f"{i * 37}.{i:02d}"),
                "created_at": T0 - timedelta(days=i),
                "updated_at": T0 + timedelta(minutes=i),
            }
            for i in range(1, 21)
        ],
        "order_lines": [
            {"order_id": o, "line": n, "qty": o * n, "modified_at": T0}
            for o in range(1, 6)
            for n in range(1, 4)
        ],
        "audit_trail": [{"message": "hello", "logged": T0}],
    }
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        for table in (customers, lines, audit):
            conn.execute(table.insert(), rows[table.name])
    engine.dispose()
    return rows


def _cache_rows(url: sa.URL, table: str, key: list[str]) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(reflected).order_by(*(reflected.c[k] for k in key))).mappings().all()
    engine.dispose()
    return [{k: _plain(v) for k, v in row.items()} for row in rows]


def _plain(value: Any) -> Any:
    """Values as every cache hands them back: SQLite keeps decimals and timestamps as text."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, str) and len(value) >= 10 and value[4] == "-" and value[:4].isdigit():
        return datetime.fromisoformat(value) if len(value) > 10 else date.fromisoformat(value)
    return value


def _in_order(old: str, new: str) -> bool:
    """Every line of `old` is in `new`, in the same order (text kept, comments included)."""
    remaining = iter(new.splitlines())
    return all(line in remaining for line in old.splitlines())


@pytest.mark.parametrize("kind", ENGINES)
def test_scaffolded_entries_load_sync_and_round_trip(tmp_path, monkeypatch, make_database, kind):
    source, cache = make_database(kind), make_database("sqlite")
    rows = _plain_tables(source)
    catalog = _catalog(tmp_path, monkeypatch, source, cache)

    result = _add(catalog, "customers", "order_lines", "audit_trail", "--write")
    assert result.exit_code == 0, result.output
    assert f"{catalog}: added customers, order_lines, audit_trail" in result.stdout
    assert (
        "audit_trail: written commented out: no primary key or unique index on audit_trail" in result.stderr
    )
    text = catalog.read_text()
    assert _in_order(CATALOG, text), text
    assert text.index("- name: order_lines") < text.index("defaults:"), "appended inside the tables: list"

    loaded = load_catalog(catalog)
    assert [t.name for t in loaded.tables] == ["customers", "order_lines"]
    customers, lines = loaded.tables
    assert (customers.primary_key, customers.updated_at) == (["id"], "updated_at")
    assert "# primary_key: the source's primary key constraint" in text
    assert "# updated_at: updated_at, an indexed" in text
    assert "# primary_key: no primary key constraint; the unique index order_lines_key" in text
    if kind == "duckdb":  # zonemaps serve a range on any column: no index needed
        assert (lines.primary_key, lines.updated_at) == (["order_id", "line"], "modified_at")
        assert "# updated_at: modified_at, a TIMESTAMP" in text
        assert "named as a change time (zonemaps serve its ranges)\n    updated_at: modified_at" in text
    else:
        assert (lines.primary_key, lines.updated_at) == (["order_id", "line"], None)
        assert "# updated_at: none chosen: modified_at looks like a change time, but no index starts" in text
    assert "# TODO: no primary key or unique index on audit_trail; choose one" in text
    assert "#   source_table: audit_trail" in text

    harness = Harness(catalog)
    for table in ("customers", "order_lines"):
        synced = harness.sync(table, "mass")
        assert synced.success, failure_message(synced)
    assert _cache_rows(cache, "customers", ["id"]) == rows["customers"]
    assert _cache_rows(cache, "order_lines", ["order_id", "line"]) == rows["order_lines"]
    daily = harness.sync("customers", "daily")
    assert daily.success, failure_message(daily)
    assert materialization(daily)["sync_assets/mode"] == "incremental"
    if kind == "duckdb":
        daily = harness.sync("order_lines", "daily")
        assert daily.success, failure_message(daily)
        assert materialization(daily)["sync_assets/mode"] == "incremental"


@pytest.mark.parametrize("kind", ENGINES)
def test_a_pattern_prints_every_table_it_matches(tmp_path, monkeypatch, make_database, kind):
    source = make_database(kind)
    _plain_tables(source)
    catalog = _catalog(tmp_path, monkeypatch, source, make_database("sqlite"))
    schema = {"postgresql": "public.", "duckdb": "main."}.get(kind, "")
    result = _add(catalog, f"{schema}*_*")  # order_lines and audit_trail, not customers
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert [t["name"] for t in printed] == ["order_lines"], "audit_trail's entry is a comment"
    assert "  # - name: audit_trail\n" in result.stdout
    assert printed[0]["columns"] == {
        "order_id": "order_id",
        "line": "line",
        "qty": "qty",
        "modified_at": "modified_at",
    }
    assert printed[0].get("source_schema") == (schema[:-1] or None)
    assert catalog.read_text() == CATALOG, "printing leaves the catalog alone"
    # Names are matched case-insensitively; a pattern matching nothing names itself.
    assert [t["name"] for t in yaml.safe_load(_add(catalog, "CUSTOMER?").stdout)] == ["customers"]
    missing = _add(catalog, "nothing_like_it*")
    assert (
        missing.exit_code == 1
        and "no table in the connection's default schema matches 'nothing_like_it*'" in (missing.output)
    )


def test_a_name_already_in_the_catalog_is_refused(tmp_path, monkeypatch, make_database):
    source = make_database("sqlite")
    _plain_tables(source)
    catalog = _catalog(tmp_path, monkeypatch, source, make_database("sqlite"))
    assert _add(catalog, "customers", "--write").exit_code == 0
    before = catalog.read_text()
    again = _add(catalog, "order_lines", "customers", "--write")
    assert again.exit_code == 1
    assert "table 'customers' (customers) is already in the catalog: tables[0] 'customers'" in again.output
    assert catalog.read_text() == before, "nothing is written when one table is refused"
    renamed = _add(catalog, "customers", "--name", "customers_again", "--write")
    assert renamed.exit_code == 0, renamed.output
    assert [t.name for t in load_catalog(catalog).tables] == ["customers", "customers_again"]


def test_secrets_stay_out_of_the_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("ERP_PASSWORD", "s3cret-Pa55")
    path = tmp_path / "catalog.yaml"
    port = free_port()
    path.write_text(
        textwrap.dedent(f"""\
        connections:
          src: {{url: "postgresql+psycopg://erp@127.0.0.1:{port}/erp", password: "${{ERP_PASSWORD}}"}}
          cache: {{url: "sqlite:///{tmp_path}/cache.sqlite"}}
        cache: cache
        """)
    )
    result = _add(path, "F4801")
    assert result.exit_code == 1
    assert "source connection 'src'" in result.output and "s3cret-Pa55" not in result.output
    assert _add(path, "--help").exit_code == 0
    unknown = run_cli("add-table", "erp", "F4801", catalog=path, instance=None)
    assert (
        unknown.exit_code == 1 and "unknown connection 'erp' (the catalog has: cache, src)" in unknown.output
    )


def test_a_catalog_may_start_without_tables(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text('connections:\n  cache: {url: "sqlite:///c.sqlite"}\ncache: cache\ntables:\n')
    result = run_cli("validate", catalog=path, instance=None)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: ok, 0 tables, 1 connection, 0 schedules\n"


# -- JDE ------------------------------------------------------------------------------------------
FIRST_DAY = 126032  # 2026-02-01 in CYYDDD


def _jde_source(url: sa.URL, *, dictionary: bool) -> list[dict[str, Any]]:
    """An F4801 as JDE lays it out, and JDE's data dictionary beside it: F9210 (specifications)
    and F9202 (display text, with work orders' own text for DOCO: system 48)."""
    metadata = sa.MetaData()
    f4801 = sa.Table(
        "F4801",
        metadata,
        sa.Column("WADOCO", sa.Numeric(8, 0), primary_key=True),
        sa.Column("WAMCU", sa.CHAR(12)),
        sa.Column("WALITM", sa.CHAR(25)),
        sa.Column("WAUORG", sa.Numeric(15, 0)),
        sa.Column("WATRDJ", sa.Numeric(6, 0)),
        sa.Column("WASTRT", sa.Numeric(6, 0)),  # a date whose item does not end in J
        sa.Column("WAUPMJ", sa.Numeric(6, 0), index=True),
        sa.Column("WATDAY", sa.Numeric(6, 0)),
    )
    specs = sa.Table(
        "F9210",
        metadata,
        sa.Column("FRDTAI", sa.CHAR(10), primary_key=True),
        sa.Column("FRCDEC", sa.CHAR(2)),
        sa.Column("FROWTP", sa.Integer),
    )
    texts = sa.Table(
        "F9202",
        metadata,
        sa.Column("FRDTAI", sa.CHAR(10), primary_key=True),
        sa.Column("FRLNGP", sa.CHAR(2), primary_key=True),
        sa.Column("FRSYR", sa.CHAR(4), primary_key=True),
        sa.Column("FRDSCA", sa.CHAR(40)),
    )
    items = [  # data item, display decimals, type (9 numeric, 2 string, 11 date), description
        ("DOCO", "0", 9, "Document (Order No, Invoice, etc.)"),
        ("MCU", " ", 2, "Business Unit"),
        ("LITM", " ", 2, "2nd Item Number"),
        ("UORG", "2", 9, "Units - Order/Transaction Quantity"),
        ("TRDJ", " ", 11, "Date - Order/Transaction"),
        ("STRT", " ", 11, "Date - Start"),
        ("UPMJ", " ", 11, "Date - Updated"),
        ("TDAY", "0", 9, "Time of Day"),
    ]
    rows = [
        {
            "WADOCO": i,
            "WAMCU": f"M{i % 3}".rjust(12),
            "WALITM": f"IT-{i:04d}".ljust(25),
            "WAUORG": i * 1234 - 5000,
            "WATRDJ": 0 if i % 4 == 0 else 125100 + i,
            "WASTRT": 126001 + i,
            "WAUPMJ": FIRST_DAY + i // 10,
            "WATDAY": 80000 + i * 100,
        }
        for i in range(1, 31)
    ]
    engine = sa.create_engine(url)
    metadata.create_all(engine, tables=[f4801, specs, texts] if dictionary else [f4801])
    with engine.begin() as conn:
        conn.execute(f4801.insert(), rows)
        if dictionary:
            conn.execute(specs.insert(), [{"FRDTAI": d, "FRCDEC": n, "FROWTP": t} for d, n, t, _ in items])
            texts_rows = [
                {"FRDTAI": d, "FRLNGP": " ", "FRSYR": " ", "FRDSCA": text} for d, _, _, text in items
            ]
            texts_rows += [
                {"FRDTAI": "DOCO", "FRLNGP": " ", "FRSYR": "48", "FRDSCA": "Order Number"},
                {"FRDTAI": "DOCO", "FRLNGP": "F", "FRSYR": " ", "FRDSCA": "Numéro de document"},
            ]
            conn.execute(texts.insert(), texts_rows)
    engine.dispose()
    return rows


def _jde_day(value: int) -> date | None:
    return None if value == 0 else date(1900 + value // 1000, 1, 1) + timedelta(days=value % 1000 - 1)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])  # DuckDB has no CHAR: nothing to trim
def test_jde_table_with_its_data_dictionary(tmp_path, monkeypatch, make_database, kind):
    source, cache = make_database(kind), make_database("sqlite")
    rows = _jde_source(source, dictionary=True)
    catalog = _catalog(tmp_path, monkeypatch, source, cache)
    result = _add(catalog, "F48*", "--write")
    assert result.exit_code == 0, result.output
    assert "JDE data dictionary: F9210 (8 data items)" in result.stderr
    text = catalog.read_text()
    (work_orders,) = load_catalog(catalog).tables
    assert work_orders.name == "f4801" and work_orders.source_table == "F4801"
    assert work_orders.columns == {
        "WADOCO": "order_number",  # F9202's text for work orders (system 48)
        "WAMCU": "business_unit",
        "WALITM": "second_item_number",
        "WAUORG": "units_order_transaction_quantity",
        "WATRDJ": "date_order_transaction",
        "WASTRT": "date_start",
        "WAUPMJ": "date_updated",
        "WATDAY": "time_of_day",
    }
    assert work_orders.primary_key == ["order_number"] and work_orders.updated_at == "updated_at"
    jde = work_orders.jde
    assert jde is not None
    assert jde.julian_dates == ["WATRDJ", "WASTRT", "WAUPMJ"]
    assert jde.times == {"updated_at": ["WAUPMJ", "WATDAY"]}
    assert jde.implied_decimals == {"WAUORG": 2}
    assert jde.trim is True
    assert "WADOCO: {name: order_number, description: Order Number}" in text
    assert '# NUMERIC(8, 0); F9210: "Order Number"' in text
    assert work_orders.column_descriptions["order_number"] == "Order Number"
    assert "Julian date (F9210: STRT is a JDE date)" in text
    assert "a JDE table: F-number name, every column prefixed WA" in text
    assert "(WAUPMJ leads an index)" in text

    harness = Harness(catalog)
    synced = harness.sync("f4801", "mass")
    assert synced.success, failure_message(synced)
    # The dictionary's text reaches the UI's Columns table.
    schema = materialization(synced)["dagster/column_schema"]
    described = {c.name: c.description for c in schema.columns}
    assert described["order_number"] == "Order Number" and described["updated_at"] is None
    got = _cache_rows(cache, "f4801", ["order_number"])
    assert got == [
        {
            "order_number": r["WADOCO"],
            "business_unit": r["WAMCU"].rstrip(),
            "second_item_number": r["WALITM"].rstrip(),
            "units_order_transaction_quantity": Decimal(r["WAUORG"]) / 100,
            "date_order_transaction": _jde_day(r["WATRDJ"]),
            "date_start": _jde_day(r["WASTRT"]),
            "date_updated": _jde_day(r["WAUPMJ"]),
            "time_of_day": r["WATDAY"],
            "updated_at": datetime.combine(
                _jde_day(r["WAUPMJ"]),  # type: ignore[arg-type]
                datetime.min.time(),
            ).replace(hour=r["WATDAY"] // 10000, minute=r["WATDAY"] // 100 % 100),
        }
        for r in rows
    ]
    daily = harness.sync("f4801", "daily")
    assert daily.success, failure_message(daily)
    assert materialization(daily)["sync_assets/mode"] == "incremental"


def test_jde_table_without_a_dictionary_guesses_dates_and_never_decimals(
    tmp_path, monkeypatch, make_database
):
    source = make_database("sqlite")
    _jde_source(source, dictionary=False)
    catalog = _catalog(tmp_path, monkeypatch, source, make_database("sqlite"))
    result = _add(catalog, "F4801")
    assert result.exit_code == 0, result.output
    (entry,) = yaml.safe_load(result.stdout)
    assert entry["columns"]["WADOCO"] == "WADOCO", "no dictionary: the source names"
    assert entry["jde"] == {
        "julian_dates": ["WATRDJ", "WAUPMJ"],  # WASTRT's item does not end in J
        "times": {"updated_at": ["WAUPMJ", "WATDAY"]},
        "trim": True,
    }
    assert "Julian date? a guess (TRDJ ends in J, JDE's rule): check" in result.stdout
    assert (
        "# implied_decimals: none: no data dictionary (F9210 or --dictionary); never guessed" in result.stdout
    )


@pytest.mark.parametrize("form", ["yaml", "csv"])
def test_jde_dictionary_file(tmp_path, monkeypatch, make_database, form):
    source, cache = make_database("sqlite"), make_database("sqlite")
    _jde_source(source, dictionary=False)
    catalog = _catalog(tmp_path, monkeypatch, source, cache)
    if form == "yaml":
        dictionary = tmp_path / "dd.yaml"
        dictionary.write_text(
            "DOCO: {name: order_id, description: 'Document (Order No, Invoice, etc.)'}\n"
            "UORG: {decimals: 2, description: Quantity Ordered}\n"
            "STRT: {julian_date: true, description: Start Date}\n"
        )
    else:
        dictionary = tmp_path / "dd.csv"
        dictionary.write_text(
            "data_item,decimals,description,name,julian_date\n"
            "DOCO,,Document,order_id,\nUORG,2,Quantity Ordered,,\nSTRT,,Start Date,,true\n"
        )
    result = _add(catalog, "F4801", "--dictionary", str(dictionary), "--write")
    assert result.exit_code == 0, result.output
    (table,) = load_catalog(catalog).tables
    assert table.columns["WADOCO"] == "order_id" and table.columns["WAUORG"] == "quantity_ordered"
    assert table.columns["WASTRT"] == "start_date" and table.columns["WAMCU"] == "WAMCU"
    assert table.jde is not None and table.jde.implied_decimals == {"WAUORG": 2}
    assert table.jde.julian_dates == ["WATRDJ", "WASTRT", "WAUPMJ"]
    assert f"name from {dictionary.name}" in catalog.read_text()
    synced = Harness(catalog).sync("f4801", "mass")
    assert synced.success, failure_message(synced)
    assert _cache_rows(cache, "f4801", ["order_id"])[0]["quantity_ordered"] == Decimal("-37.66")


# -- pieces ---------------------------------------------------------------------------------------
def test_names_from_descriptions():
    assert snake_case("OrderLines") == "order_lines" and snake_case("F4801") == "f4801"
    assert snake_case("Note Text") == "note_text" and snake_case("2nd Item Number") == "second_item_number"
    assert friendly_name("Document (Order No, Invoice, etc.)") == "document"
    assert friendly_name("Amount - Unit Cost & Price #") == "amount_unit_cost_and_price_number"
    assert len(friendly_name("A very long description that goes on and on and on and on")) <= 40


def _items(indent: int) -> str:
    return " " * indent + "- name: new\n" + " " * indent + "  source: src\n"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("cache: c\n", "cache: c\ntables:\n  - name: new\n    source: src\n"),
        ("tables: []  # none\ncache: c\n", "tables:   # none\n  - name: new\n    source: src\ncache: c\n"),
        (
            "tables:\n- name: a\n  columns: {X: y}   # kept\n# next\ncache: c\n",
            "tables:\n- name: a\n  columns: {X: y}   # kept\n- name: new\n  source: src\n# next\ncache: c\n",
        ),
    ],
)
def test_items_are_appended_to_the_text(before, after):
    assert append_items(before, _items) == after


def test_a_flow_list_of_tables_is_not_rewritten():
    with pytest.raises(CatalogError, match=r"line 1: `tables:` is a \[flow\] list"):
        append_items("tables: [{name: a}]\n", _items)
