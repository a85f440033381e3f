"""The file-drop source on real files in a temp folder: CSV (with reader options and another
encoding), Parquet and Excel; a manifest that finds new, replaced and late files; rows keyed by
file and row when the table names no key; errors naming file, line and column."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from sync_assets_tests.helpers import failure_message, make_harness, materialization

ORDERS = {"name": "orders", "source": "drops", "files": "orders_*.csv", "primary_key": ["order_id"]}


def harness_for(tmp_path, monkeypatch, make_database, table=None):
    folder = tmp_path / "drops"
    folder.mkdir(exist_ok=True)
    cache_url = make_database("sqlite")
    monkeypatch.setenv("DROP_DIR", str(folder))
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=cache_url,
        cache_url=cache_url,
        tables=[{k: v for k, v in {**ORDERS, **(table or {})}.items() if v is not None}],
        extra={
            "connections": {
                "drops": {"type": "files", "path": "${DROP_DIR}"},
                "cache": {"url": "${SYNC_TEST_CACHE_URL}"},
            }
        },
    )
    return harness, folder, cache_url


def write_csv(
    folder: Path,
    name: str,
    rows: list[tuple],
    *,
    mtime: float | None = None,
    header="order_id,qty,price,placed_at,code",
) -> Path:
    path = folder / name
    path.write_text("\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def cached(cache_url: sa.URL, table: str = "orders", key: str = "order_id") -> list[dict]:
    engine = sa.create_engine(cache_url)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {key}"))]
    engine.dispose()
    return rows


def manifest(cache_url: sa.URL) -> dict[str, str]:
    engine = sa.create_engine(cache_url)
    with engine.connect() as conn:
        rows = {r.path: r.sha256 for r in conn.execute(sa.text("SELECT path, sha256 FROM sync_files"))}
    engine.dispose()
    return rows


def sync(harness, partition="mass"):
    return harness.sync("orders", partition, source="drops")


def test_mass_then_dailies_read_new_replaced_and_late_files(tmp_path, monkeypatch, make_database):
    harness, folder, cache_url = harness_for(tmp_path, monkeypatch, make_database)
    write_csv(
        folder,
        "orders_1.csv",
        [(1, 5, "1.50", "2026-03-01T08:00:00", "007"), (2, 1, "2.00", "2026-03-01T09:00:00", "010")],
    )
    write_csv(folder, "orders_2.csv", [(3, 2, "3.25", "2026-03-02T08:00:00", "020")])
    mass = sync(harness)
    assert mass.success, failure_message(mass)
    rows = cached(cache_url)
    assert [r["order_id"] for r in rows] == [1, 2, 3]
    assert rows[0]["code"] == "007"  # a leading zero keeps a code text
    assert rows[0]["_file"] == "orders_1.csv" and rows[0]["_row"] == 1
    assert set(manifest(cache_url)) == {"orders_1.csv", "orders_2.csv"}

    # Nothing new: the daily reads no file.
    daily = sync(harness, "daily")
    assert daily.success and materialization(daily)["sync_assets/rows_read"] == 0

    # orders_1 replaced in place with its old modification time kept; a late file with an old time.
    old = (folder / "orders_1.csv").stat().st_mtime
    write_csv(
        folder,
        "orders_1.csv",
        [(1, 9, "1.50", "2026-03-01T08:00:00", "007"), (2, 1, "2.00", "2026-03-01T09:00:00", "010")],
        mtime=old,
    )
    write_csv(folder, "orders_0_late.csv", [(4, 4, "4.00", "2026-02-01T08:00:00", "030")], mtime=old - 86400)
    daily = sync(harness, "daily")
    assert daily.success, failure_message(daily)
    meta = materialization(daily)
    assert (
        meta["sync_assets/rows_read"],
        meta["sync_assets/rows_inserted"],
        meta["sync_assets/rows_updated"],
    ) == (3, 1, 1)
    rows = {r["order_id"]: r for r in cached(cache_url)}
    assert rows[1]["qty"] == 9 and 4 in rows and len(rows) == 4
    assert len(manifest(cache_url)) == 3


def test_a_later_file_wins_for_a_key_both_hold(tmp_path, monkeypatch, make_database):
    harness, folder, cache_url = harness_for(tmp_path, monkeypatch, make_database)
    write_csv(folder, "orders_a.csv", [(1, 1, "1.00", "2026-03-01T08:00:00", "A")], mtime=1_700_000_000)
    assert sync(harness).success
    write_csv(folder, "orders_b.csv", [(1, 2, "1.00", "2026-03-01T08:00:00", "B")], mtime=1_700_000_100)
    write_csv(folder, "orders_c.csv", [(1, 3, "1.00", "2026-03-01T08:00:00", "C")], mtime=1_700_000_200)
    assert sync(harness, "daily").success
    (row,) = cached(cache_url)
    assert (row["qty"], row["code"], row["_file"]) == (3, "C", "orders_c.csv")


def test_a_file_that_does_not_parse_names_file_line_and_column_and_writes_nothing(
    tmp_path, monkeypatch, make_database
):
    harness, folder, cache_url = harness_for(
        tmp_path, monkeypatch, make_database, table={"schema": {"price": "decimal(10,2)"}}
    )
    write_csv(folder, "orders_1.csv", [(1, 5, "1.50", "2026-03-01T08:00:00", "X")])
    assert sync(harness).success
    write_csv(
        folder,
        "orders_2.csv",
        [(2, 1, "2.00", "2026-03-01T09:00:00", "Y"), (3, "many", "3.00", "2026-03-01T10:00:00", "Z")],
    )
    result = sync(harness, "daily")
    assert not result.success
    assert "file orders_2.csv, line 3, column 'qty': 'many' is not int64" in failure_message(result)
    assert [r["order_id"] for r in cached(cache_url)] == [1]
    assert set(manifest(cache_url)) == {"orders_1.csv"}  # read again by the next sync
    write_csv(folder, "orders_3.csv", [(4, 1, "1.234", "2026-03-01T09:00:00", "Y")])
    (folder / "orders_2.csv").unlink()
    result = sync(harness, "daily")
    assert "file orders_3.csv, line 2, column 'price': '1.234' is not decimal(10,2)" in failure_message(
        result
    )


def test_csv_reader_options_and_another_encoding(tmp_path, monkeypatch, make_database):
    table = {
        "files": "export_*.txt",
        "format": "csv",
        "csv": {"separator": ";", "encoding": "latin-1", "skip_rows": 1},
    }
    harness, folder, cache_url = harness_for(tmp_path, monkeypatch, make_database, table=table)
    text = "exported by the ERP\norder_id;name;qty\n1;Müller GmbH;2\n2;Crème brûlée;3\n"
    (folder / "export_1.txt").write_bytes(text.encode("latin-1"))
    result = sync(harness)
    assert result.success, failure_message(result)
    assert [r["name"] for r in cached(cache_url)] == ["Müller GmbH", "Crème brûlée"]


def test_parquet_and_excel_files(tmp_path, monkeypatch, make_database):
    openpyxl = pytest.importorskip("openpyxl")
    harness, folder, cache_url = harness_for(
        tmp_path, monkeypatch, make_database, table={"files": "orders_*.parquet"}
    )
    pl.DataFrame(
        {"order_id": [1, 2], "qty": [5, 6], "placed_at": [datetime(2026, 3, 1, 8), datetime(2026, 3, 1, 9)]}
    ).write_parquet(folder / "orders_1.parquet")
    result = sync(harness)
    assert result.success, failure_message(result)
    assert [(r["order_id"], r["qty"]) for r in cached(cache_url)] == [(1, 5), (2, 6)]

    (tmp_path / "xlsx").mkdir()
    harness, folder, cache_url = harness_for(
        tmp_path / "xlsx", monkeypatch, make_database, table={"files": "orders_*.xlsx"}
    )
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["order_id", "qty", "note"])
    sheet.append([1, 2.5, "first"])
    sheet.append([2, 3, None])
    book.save(folder / "orders_1.xlsx")
    result = sync(harness)
    assert result.success, failure_message(result)
    rows = cached(cache_url)
    assert [(r["order_id"], r["qty"], r["note"]) for r in rows] == [(1, 2.5, "first"), (2, 3.0, None)]


def test_without_a_key_rows_are_keyed_by_file_and_row(tmp_path, monkeypatch, make_database):
    table = {"primary_key": None}
    harness, folder, cache_url = harness_for(tmp_path, monkeypatch, make_database, table=table)
    write_csv(
        folder,
        "orders_1.csv",
        [(1, 5, "1.50", "2026-03-01T08:00:00", "X"), (1, 5, "1.50", "2026-03-01T08:00:00", "X")],
    )
    assert sync(harness).success
    write_csv(folder, "orders_2.csv", [(1, 6, "1.50", "2026-03-01T08:00:00", "X")])
    assert sync(harness, "daily").success
    rows = cached(cache_url, key="_file, _row")
    assert [(r["_file"], r["_row"], r["qty"]) for r in rows] == [
        ("orders_1.csv", 1, 5),
        ("orders_1.csv", 2, 5),
        ("orders_2.csv", 1, 6),
    ]


def test_a_missing_folder_fails_naming_it(tmp_path, monkeypatch, make_database):
    harness, folder, _ = harness_for(tmp_path, monkeypatch, make_database)
    folder.rmdir()
    result = sync(harness)
    assert not result.success
    assert f"table 'orders': the folder {folder} does not exist" in failure_message(result)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"files": "orders.dat"}, "`format` is needed: 'orders.dat' does not end in .csv, .parquet, .xlsx"),
        (
            {"files": None, "source_table": "orders"},
            "connection 'drops' is a folder of files: give the table `files`",
        ),
        ({"csv": {"separator": ";"}, "files": None, "endpoint": "/x"}, "`csv` applies to a `files` table"),
    ],
    ids=["unknown-extension", "table-on-a-folder", "csv-options-elsewhere"],
)
def test_files_catalog_mistakes_are_refused_at_load(tmp_path, monkeypatch, make_database, table, expected):
    from sync_assets.catalog.loader import load_catalog
    from sync_assets.errors import CatalogError

    harness, _, _ = harness_for(tmp_path, monkeypatch, make_database, table=table)
    with pytest.raises(CatalogError, match=None) as info:
        load_catalog(harness.path)
    assert expected in str(info.value), info.value


def test_reset_to_a_time_is_refused_for_a_files_table(tmp_path, monkeypatch, make_database):
    from click.testing import CliRunner

    from sync_assets.cli import main

    harness, _, _ = harness_for(tmp_path, monkeypatch, make_database)
    result = CliRunner().invoke(
        main, ["reset", "orders", "--to", "2026-03-01", "--catalog", str(harness.path)]
    )
    assert result.exit_code != 0
    assert "its incrementals follow its file manifest; use --full" in result.output


def test_a_csv_without_a_header_names_lines_from_its_first_row(tmp_path, monkeypatch, make_database):
    table = {"csv": {"has_header": False}, "primary_key": ["order_id"], "columns": {"column_0": "order_id"}}
    harness, folder, cache_url = harness_for(tmp_path, monkeypatch, make_database, table=table)
    (folder / "orders_1.csv").write_text("1,5\n2,6\n")
    assert sync(harness).success
    assert [(r["order_id"], r["column_1"]) for r in cached(cache_url)] == [(1, 5), (2, 6)]
    (folder / "orders_2.csv").write_text("3,7\n4,x\n")
    result = sync(harness, "daily")
    assert "file orders_2.csv, line 2, column 'column_1': 'x' is not int64" in failure_message(result)
