"""Benchmark: Dagster's own cost around the syncs, for a large catalog.

    .venv/bin/python bench/overhead.py                # 500 tables, 10 materialized, 3 rounds

Measures, as medians of the rounds (whole processes, nothing cached between them):

  D1  loading the code location: a fresh interpreter imports `sync_assets.definitions` for the
      catalog and builds the repository (asset graph, schedules, sensors, checks)
  D2  `dagster definitions validate` on the same catalog (the CLI's own start included)
  M1  `dagster asset materialize` of one small table: the process's wall time minus the sync's
      own duration (sync_log) is the overhead of one materialization
  M2  the same for several tables in one run (multiprocess executor, one step process per table):
      the per-asset overhead is (wall - the first table's wall) / (tables - 1)
  M3  in-process `dg.materialize` of one table, timed inside the process: the overhead without
      the CLI start and the step process

Every table of the catalog carries the checks a production catalog would (a not-null and a
unique rule, reconciliation and staleness per scheduled update type), and all three update types
are scheduled, so the definitions hold 500 assets, 3,500 checks and their schedules.
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
from pathlib import Path

import sqlalchemy as sa
from run import measure

DEFINITIONS = "sync_assets.definitions"
TABLE_ROWS = 1_000


def write_catalog(folder: Path, tables: int) -> Path:
    lines = [
        "connections:",
        f'  erp: {{url: "sqlite:///{folder / "source.sqlite"}", max_parallel: 4}}',
        f'  cache: {{url: "sqlite:///{folder / "cache.sqlite"}"}}',
        "cache: cache",
        "defaults:",
        "  timezone: UTC",
        "  schedules: {mass: '0 2 * * 0', daily: '0 3 * * *', hourly: '0 * * * *'}",
        "tables:",
    ]
    for i in range(tables):
        lines += [
            f"  - name: t{i:03d}",
            "    source: erp",
            f"    source_table: t{i:03d}",
            "    primary_key: [id]",
            "    updated_at: updated_at",
            "    columns: {descr: description}",
            "    checks:",
            "      - not_null: [id, description]",
            "      - unique: [id]",
        ]
    path = folder / "catalog.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_source(folder: Path, tables: int) -> None:
    with sqlite3.connect(folder / "source.sqlite") as db:
        for i in range(tables):
            db.execute(
                f"CREATE TABLE t{i:03d} (id INTEGER PRIMARY KEY, descr VARCHAR(40), "
                "qty NUMERIC(15, 4), updated_at TIMESTAMP)"
            )
            db.executemany(
                f"INSERT INTO t{i:03d} VALUES (?, ?, ?, ?)",
                [(n, f"row {n}", n / 4, f"2026-01-01 00:00:{n % 60:02d}.000000") for n in range(TABLE_ROWS)],
            )
            db.execute(f"CREATE INDEX t{i:03d}_updated ON t{i:03d} (updated_at)")


def sync_seconds(folder: Path, tables: list[str]) -> list[float]:
    """The latest sync's own duration of each table, from sync_log."""
    from sync_assets.sync.audit import sync_log

    engine = sa.create_engine(f"sqlite:///{folder / 'cache.sqlite'}")
    durations = []
    with engine.connect() as conn:
        for table in tables:
            row = conn.execute(
                sa.select(sync_log)
                .where(sync_log.c.table_name == table)
                .order_by(sync_log.c.id.desc())
                .limit(1)
            ).one()
            assert row.status == "succeeded", row.error
            durations.append((row.finished_at - row.started_at).total_seconds())
    engine.dispose()
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tables", type=int, default=500)
    parser.add_argument("--materialize", type=int, default=10, help="tables materialized in one run (M2)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sync_assets_overhead_"))
    try:
        run(folder, args.tables, args.materialize, args.runs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path, tables: int, many: int, runs: int) -> None:
    catalog = write_catalog(folder, tables)
    write_source(folder, many)
    home = folder / "dagster_home"
    home.mkdir()
    env = {**os.environ, "SYNC_ASSETS_CATALOG": str(catalog), "DAGSTER_HOME": str(home)}
    dagster = str(Path(sys.executable).parent / "dagster")
    load = textwrap.dedent(f"""
        import time
        start = time.perf_counter()
        import {DEFINITIONS} as location
        location.defs.get_repository_def().asset_graph
        print(time.perf_counter() - start)
        """)
    in_process = textwrap.dedent(f"""
        import time, dagster as dg
        import {DEFINITIONS} as location
        defs = location.defs
        job = defs.resolve_implicit_global_asset_job_def()
        start = time.perf_counter()
        result = job.execute_in_process(
            asset_selection=[dg.AssetKey(["erp", "t000"])], partition_key="mass",
            instance=dg.DagsterInstance.get(),
        )
        assert result.success
        print(time.perf_counter() - start)
        """)
    names = [f"t{i:03d}" for i in range(many)]
    keys = ("D1 import", "D1", "D2", "M1", "M1 own", "M2", "M3", "M3 own")
    figures: dict[str, list[float]] = {k: [] for k in keys}
    for round_ in range(1, runs + 1):
        print(f"round {round_}/{runs}", flush=True)
        wall, _ = measure([sys.executable, "-c", load], env)
        figures["D1"].append(wall)
        figures["D1 import"].append(_stdout_seconds([sys.executable, "-c", load], env))
        figures["D2"].append(measure([dagster, "definitions", "validate", "-m", DEFINITIONS], env)[0])
        select = ["asset", "materialize", "-m", DEFINITIONS, "--partition", "mass", "--select"]
        wall, _ = measure([dagster, *select, "erp/t000"], env)
        figures["M1"].append(wall)
        figures["M1 own"].append(sync_seconds(folder, ["t000"])[0])
        wall, _ = measure([dagster, *select, ",".join(f"erp/{n}" for n in names)], env)
        figures["M2"].append(wall)
        figures["M3"].append(_stdout_seconds([sys.executable, "-c", in_process], env))
        figures["M3 own"].append(sync_seconds(folder, ["t000"])[0])
        for key, values in figures.items():
            print(f"  {key}: {values[-1]:.2f} s", flush=True)
    report(figures, tables, many)


def _stdout_seconds(command: list[str], env: dict[str, str]) -> float:
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def report(figures: dict[str, list[float]], tables: int, many: int) -> None:
    m = {k: statistics.median(v) for k, v in figures.items()}
    per_asset = (m["M2"] - m["M1"]) / (many - 1) if many > 1 else float("nan")
    rows = [
        ("D1 load the definitions, whole process", m["D1"], f"import + build {m['D1 import']:.2f} s"),
        ("D2 dagster definitions validate", m["D2"], ""),
        (
            "M1 materialize 1 table, CLI",
            m["M1"],
            f"sync {m['M1 own']:.2f} s, overhead {m['M1'] - m['M1 own']:.2f} s",
        ),
        (f"M2 materialize {many} tables in one run, CLI", m["M2"], f"per further asset {per_asset:.2f} s"),
        (
            "M3 materialize 1 table, in-process",
            m["M3"],
            f"sync {m['M3 own']:.2f} s, overhead {m['M3'] - m['M3 own']:.2f} s",
        ),
    ]
    print()
    print(f"catalog of {tables} tables; medians of {len(figures['D1'])} rounds")
    for label, seconds, detail in rows:
        print(f"{label:44} {seconds:6.2f} s  {detail}")


if __name__ == "__main__":
    main()
