"""Benchmark: deletes caught by key range, and `change_detection: hash`, at 1M rows.

    .venv/bin/python bench/changes.py              # 1,000,000 rows, 3 rounds
    .venv/bin/python bench/changes.py --rows 200000 --runs 1

The work order table of bench/run.py, read from one source table into three cache tables,
PostgreSQL -> PostgreSQL and SQLite -> SQLite, each sync through `dagster asset materialize`.
Per round, at random positions:

  D0  plain daily (watermark) after 1% updated and stamped, 0.1% deleted: the baseline of D1
  D1  the same daily with `deletes: {mode: hard}`: the cost of finding the 0.1% deleted
  H0  mass of the `change_detection: hash` table: the baseline of H1
  H1  its daily after 0.1% changed without a new timestamp

Figures are medians of the rounds: the sync's own seconds (from sync_log), the whole command's
wall time, rows read (full rows fetched), and for H1 the row hashes listed. Performance belongs
here, never in the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Bench, measure  # bench/ is a folder of scripts, not a package


@dataclass
class Figures:
    own: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    rows_read: list[int] = field(default_factory=list)
    rows_deleted: list[int] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)


def catalog(folder: Path, name: str, source: str, cache: str) -> Path:
    path = folder / f"changes_{name}.yaml"
    common = "source: bench, source_table: work_orders, primary_key: [order_id]"
    path.write_text(
        textwrap.dedent(f"""\
        connections:
          bench: {{url: "{source}"}}
          cache: {{url: "{cache}"}}
        cache: cache
        defaults: {{batch_size: 100000}}
        tables:
          - {{name: wo_plain, {common}, updated_at: last_update_dt}}
          - {{name: wo_deletes, {common}, updated_at: last_update_dt, deletes: {{mode: hard}}}}
          - {{name: wo_hash, {common}, change_detection: hash, deletes: {{mode: hard}}}}
        """)
    )
    return path


def materialize(bench: Bench, path: Path, table: str, partition: str) -> float:
    env = {**os.environ, "SYNC_ASSETS_CATALOG": str(path), "DAGSTER_HOME": str(bench.home)}
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m"]
    command += ["sync_assets.definitions", "--select", f"bench/{table}", "--partition", partition]
    wall, _ = measure(command, env)
    return wall


def logged(cache_url: str, table: str) -> sa.Row:
    from sync_assets.sync.audit import sync_log

    engine = sa.create_engine(cache_url)
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(sync_log).where(sync_log.c.table_name == table).order_by(sync_log.c.id.desc()).limit(1)
        ).one()
    engine.dispose()
    assert row.status == "succeeded", row.error
    return row


def hashes_listed(bench: Bench, table: str) -> int:
    """The `sync_assets/hashes_compared` metadata of the table's latest materialization."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(bench.home)
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["bench", table]))
    assert event is not None and event.asset_materialization is not None
    return int(event.asset_materialization.metadata["sync_assets/hashes_compared"].value)


def record(
    figures: Figures, bench: Bench, cache_url: str, table: str, wall: float, *, hashes: bool = False
) -> None:
    row = logged(cache_url, table)
    figures.own.append((row.finished_at - row.started_at).total_seconds())
    figures.wall.append(wall)
    figures.rows_read.append(row.rows_read)
    figures.rows_deleted.append(row.rows_deleted or 0)
    if hashes:  # an incremental's materialization (a mass also records the other partitions)
        figures.hashes.append(hashes_listed(bench, table))


def change_postgres(bench: Bench, rows: int, *, stamped: bool) -> None:
    """At random positions: 1% updated and stamped and 0.1% deleted, or 0.1% changed without a
    new timestamp."""
    part = max(1, rows // 1000)
    if stamped:
        sql = f"""
            UPDATE work_orders SET qty_completed = qty_completed + 1, last_update_dt = now()
            WHERE order_id IN (SELECT order_id FROM work_orders ORDER BY random() LIMIT {part * 10});
            DELETE FROM work_orders
            WHERE order_id IN (SELECT order_id FROM work_orders ORDER BY random() LIMIT {part});
        """
    else:
        sql = f"""
            UPDATE work_orders SET remark = 'changed without a timestamp'
            WHERE order_id IN (SELECT order_id FROM work_orders ORDER BY random() LIMIT {part});
        """
    subprocess.run(bench.psql("src", "-c", sql), check=True, stdout=subprocess.DEVNULL)
    bench.vacuum()


def change_sqlite(path: Path, rows: int, *, stamped: bool) -> None:
    part = max(1, rows // 1000)
    with sqlite3.connect(path) as db:
        if stamped:
            db.executescript(f"""
                UPDATE work_orders SET qty_completed = qty_completed + 1,
                    last_update_dt = strftime('%Y-%m-%d %H:%M:%f', 'now')
                WHERE order_id IN (SELECT order_id FROM work_orders ORDER BY random() LIMIT {part * 10});
                DELETE FROM work_orders
                WHERE order_id IN (SELECT order_id FROM work_orders ORDER BY random() LIMIT {part});
            """)
        else:
            db.executescript(f"""
                UPDATE work_orders SET remark = 'changed without a timestamp'
                WHERE order_id IN (SELECT order_id FROM work_orders ORDER BY random() LIMIT {part});
            """)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sync_assets_bench_changes_"))
    try:
        run(args.rows, args.runs, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(rows: int, runs: int, folder: Path) -> None:
    bench = Bench(rows, folder)
    bench.setup()
    sqlite_cache = folder / "changes_cache.sqlite"
    pairs = {
        "PG->PG": (catalog(folder, "pg", bench.url("src"), bench.url("cache")), bench.url("cache")),
        "SQLite->SQLite": (
            catalog(folder, "sqlite", f"sqlite:///{bench.sqlite_source}", f"sqlite:///{sqlite_cache}"),
            f"sqlite:///{sqlite_cache}",
        ),
    }
    found: dict[tuple[str, str], Figures] = {}

    def change(pair: str, *, stamped: bool) -> None:
        if pair == "PG->PG":
            change_postgres(bench, rows, stamped=stamped)
        else:
            change_sqlite(bench.sqlite_source, rows, stamped=stamped)

    for round_ in range(1, runs + 1):
        for pair, (path, cache_url) in pairs.items():
            print(f"round {round_}/{runs}: {pair}", flush=True)
            figures = {k: found.setdefault((pair, k), Figures()) for k in ("D0", "D1", "H0", "H1")}
            # Deletes: a plain daily against one that also finds the deleted rows.
            for table in ("wo_plain", "wo_deletes"):
                materialize(bench, path, table, "mass")
            change(pair, stamped=True)
            record(figures["D0"], bench, cache_url, "wo_plain", materialize(bench, path, "wo_plain", "daily"))
            wall = materialize(bench, path, "wo_deletes", "daily")
            record(figures["D1"], bench, cache_url, "wo_deletes", wall)
            # Hash: a mass against the daily that finds 0.1% changed without a timestamp.
            record(figures["H0"], bench, cache_url, "wo_hash", materialize(bench, path, "wo_hash", "mass"))
            change(pair, stamped=False)
            wall = materialize(bench, path, "wo_hash", "daily")
            record(figures["H1"], bench, cache_url, "wo_hash", wall, hashes=True)
    bench.stop()
    report(found, rows, runs)


def report(found: dict[tuple[str, str], Figures], rows: int, runs: int) -> None:
    labels = {
        "D0": "plain daily (watermark)",
        "D1": "daily + deletes: hard",
        "H0": "mass, change_detection: hash",
        "H1": "hash daily (no timestamp)",
    }
    baselines = {"D1": "D0", "H1": "H0"}
    print(f"\n{rows:,} rows, medians of {runs} rounds")
    print("D: after 1% updated and stamped and 0.1% deleted; H: after 0.1% changed without a timestamp")
    columns = ("own s", "wall s", "ratio", "read", "deleted", "hashes")
    print(f"{'pair':<15} {'scenario':<32} " + " ".join(f"{c:>8}" for c in columns))
    for (pair, key), f in found.items():
        own = statistics.median(f.own)
        base = baselines.get(key)
        ratio = own / statistics.median(found[(pair, base)].own) if base else 1.0
        hashes = f"{int(statistics.median(f.hashes)):,}" if f.hashes and key == "H1" else "-"
        print(
            f"{pair:<15} {key} {labels[key]:<29} {own:>8.2f} {statistics.median(f.wall):>8.2f} "
            f"{ratio:>7.2f}x {int(statistics.median(f.rows_read)):>8,} "
            f"{int(statistics.median(f.rows_deleted)):>8,} {hashes:>8}"
        )


if __name__ == "__main__":
    main()
