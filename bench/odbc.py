"""Benchmark: reading an ODBC source as rows (pyodbc) or as Arrow batches (arrow-odbc).

    .venv/bin/python bench/odbc.py                 # 1,000,000 rows, 3 rounds
    .venv/bin/python bench/odbc.py --rows 200000 --runs 1

No ASE or SQL Server runs here, so the ODBC driver is psqlODBC against a private PostgreSQL,
reading the work order table of bench/run.py (20 columns; its TEXT remark as VARCHAR(200), since
arrow-odbc reads bounded text only). Each reader runs in a process of its
own and turns the whole table into batches of the sync's schema, with the statement a sync sends:

  R  pyodbc `fetchmany` rows into polars frames (the row path of an ODBC source today)
  A  arrow-odbc, through dialects/odbc_reader.py (`arrow_odbc: true`)
  N  PostgreSQL's own ADBC reader (what a PostgreSQL source really uses: the native ceiling)

Figures are medians of the rounds, ratios to R; peak RSS of each reader's process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Bench, measure  # bench/ is a folder of scripts, not a package

BATCH = 100_000
READERS = {"R": "pyodbc rows", "A": "arrow-odbc", "N": "ADBC (native)"}


def read(kind: str, url: str) -> None:
    """One reader over the whole table (runs in its own process)."""
    import polars as pl
    from sqlalchemy.dialects import postgresql

    from sync_assets.batches import to_frame
    from sync_assets.catalog.models import TableSpec
    from sync_assets.dialects import get_dialect, odbc_reader
    from sync_assets.sources.sql import SqlSource

    spec = TableSpec(name="work_orders", source="bench", source_table="work_orders", primary_key=["order_id"])
    engine = sa.create_engine(url)
    rows = 0
    with engine.connect() as conn:
        source = SqlSource.open(conn, get_dialect("postgresql"), spec, batch_size=BATCH, log=lambda _: None)
        statement, schema = source.described.select(), source.described.schema()
        assert schema is not None
        host = engine.url.query["host"]
        # BoolsAsChar=0: psqlODBC hands BOOLEAN to pyodbc as a bit, not the text "1". UseDeclareFetch:
        # it reads through a cursor, Fetch rows at a time, instead of holding the whole result set
        # (as the TDS drivers stream).
        database = engine.url.database
        odbc = (
            f"DRIVER=PostgreSQL Unicode;Servername={host};Database={database};UID=postgres;"
            f"BoolsAsChar=0;UseDeclareFetch=1;Fetch={BATCH}"
        )
        if kind == "N":
            for frame in source.batches(None):
                rows += frame.height
        elif kind == "A":
            import arrow_odbc

            plan = odbc_reader.read_plan(statement, schema)
            assert plan is not None, "the work order table must have an exact Arrow fetch"
            sql, parameters = odbc_reader.query_and_parameters(
                plan.statement, postgresql.dialect(paramstyle="qmark")
            )  # type: ignore[misc]
            batches = odbc_reader.batches(
                lambda: arrow_odbc.connect(odbc),
                sql,
                parameters,
                plan,
                schema=schema,
                table="work_orders",
                batch_size=BATCH,
            )
            for frame in batches:
                rows += frame.height
        else:
            import pyodbc

            sql = str(statement.compile(dialect=postgresql.dialect(paramstyle="qmark")))
            connection = pyodbc.connect(odbc)
            cursor = connection.cursor()
            cursor.execute(sql)
            names = [d[0] for d in cursor.description]
            while chunk := cursor.fetchmany(BATCH):
                # pyodbc.Row is not a sequence to polars; SQLAlchemy makes the same tuples.
                frame: pl.DataFrame = to_frame([tuple(r) for r in chunk], names, schema, table="work_orders")
                rows += frame.height
            connection.close()
    engine.dispose()
    print(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--read", nargs=2, metavar=("KIND", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        read(*args.read)
        return
    with tempfile.TemporaryDirectory(prefix="sync_bench_odbc_") as tmp:
        bench = Bench(args.rows, Path(tmp))
        try:
            with bench.admin.connect() as conn:
                conn.execute(sa.text("CREATE DATABASE src"))
            import subprocess

            from run import SQL

            print(f"generating {args.rows:,} rows ...", flush=True)
            subprocess.run(
                bench.psql("src", "-v", f"n={args.rows}", "-f", str(SQL / "gen_work_orders.sql")),
                check=True,
                stdout=subprocess.DEVNULL,
            )
            url = bench.url("src")
            # arrow-odbc reads bounded text only (fetch buffers are sized by the longest value).
            with sa.create_engine(url).begin() as conn:
                conn.execute(sa.text("ALTER TABLE work_orders ALTER COLUMN remark TYPE varchar(200)"))
            times: dict[str, list[float]] = {k: [] for k in READERS}
            peaks: dict[str, list[float]] = {k: [] for k in READERS}
            for round_ in range(args.runs):
                for kind in READERS:
                    seconds, peak = measure([sys.executable, __file__, "--read", kind, url])
                    times[kind].append(seconds)
                    peaks[kind].append(peak)
                    print(f"round {round_ + 1} {kind} {seconds:.2f} s {peak:.0f} MiB", flush=True)
        finally:
            bench.server.cleanup()
    base = statistics.median(times["R"])
    print(f"\n{args.rows:,} rows, medians of {args.runs}, whole process (imports included)")
    print("| reader | seconds | x pyodbc rows | peak MiB |")
    print("|---|---:|---:|---:|")
    for kind, label in READERS.items():
        median = statistics.median(times[kind])
        print(f"| {label} | {median:.2f} | {median / base:.2f} | {statistics.median(peaks[kind]):.0f} |")


if __name__ == "__main__":
    main()
