"""Benchmark: cross-engine full reloads against a hand-written ADBC pipeline, dlt and Sling.

    .venv/bin/python bench/pairs.py                         # 1,000,000 rows, 3 rounds, every pair
    .venv/bin/python bench/pairs.py --rss-rows 5000000      # and peak RSS at 5M against 1M
    .venv/bin/python bench/pairs.py --rows 5000000 --runs 1 --only-sync   # 5M alone

The work order table of bench/run.py (20 columns), generated in a private PostgreSQL and copied
into a SQLite and a DuckDB source by sync_assets itself. For each pair, per round, in turn:

  H  the hand-written pipeline: the source's Arrow reader (ADBC for PostgreSQL and SQLite,
     DuckDB's own) into the cache's bulk load (ADBC ingest, DuckDB's INSERT from Arrow), one
     transaction, into a table created first with its key and watermark index (DuckDB: the key
     alone, as sync_assets builds it)
  S  sync_assets mass through `dagster asset materialize`: the whole command, and the sync's own
     duration from its materialization (`sync_assets/duration_s`: read, load, commit, clean-up)
  D  dlt replace (sql_database, pyarrow backend; parquet loader into PostgreSQL, its sqlalchemy
     destination into SQLite), when installed
  L  Sling full-refresh, where its binary (`[bench]`), socat and the sqlite3 CLI are there
  F  once per round: `dagster asset materialize` of an asset that does nothing, on the same
     instance (Dagster's own floor: what of the CLI cost is not ours)

Figures are medians of the rounds; ratios are to H of the same pair in the same run (the sync's own
duration for S, the whole process for the others), plus the CLI's own cost (S process minus
S sync) and peak RSS of the process tree. With `--rss-rows N`, the same run then builds the
sources again at N rows and syncs each pair once more: peak RSS at N against the median at
`--rows` shows whether memory grows with the table. Performance belongs here, never in the tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Bench, _sling_binary, measure  # bench/ is a folder of scripts, not a package

# Dagster's floor: its CLI materializing an asset that does nothing, in process like a one-table run.
NOOP_DEFINITIONS = """
import dagster as dg

@dg.asset
def noop() -> None:
    pass

defs = dg.Definitions(assets=[noop], executor=dg.in_process_executor)
"""

PAIRS = [("postgresql", "sqlite"), ("sqlite", "postgresql"), ("postgresql", "duckdb"), ("duckdb", "sqlite")]

# The hand-written pipeline, one process: argv = source kind, source, cache kind, cache.
PIPELINE = r'''
import sys, pyarrow as pa
src_kind, src, dst_kind, dst = sys.argv[1:5]
QUERY = "SELECT * FROM work_orders"
KEY = "CREATE INDEX ix_hand_wo_last_update_dt ON work_orders (last_update_dt)"

def plain(batch):  # ADBC PostgreSQL's numeric is an opaque extension over text
    cols = [c.storage if isinstance(c, pa.ExtensionArray) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)

def batches():
    if src_kind == "duckdb":
        import duckdb
        con = duckdb.connect(src, read_only=True)
        yield from con.sql(QUERY).to_arrow_reader(100_000)
        return
    if src_kind == "sqlite":
        import adbc_driver_sqlite.dbapi as adbc
    else:
        import adbc_driver_postgresql.dbapi as adbc
    with adbc.connect(src) as con, con.cursor() as cur:
        cur.execute(QUERY)
        for batch in cur.fetch_record_batch():
            yield plain(batch)

def for_cache(batch):
    """What the cache's loader takes: decimals as the cache keeps them."""
    arrays, names = [], batch.schema.names
    for name, column in zip(names, batch.columns):
        if name in ("qty_ordered", "qty_completed", "unit_cost"):
            column = column.cast(pa.decimal128(15, 4)) if dst_kind != "sqlite" else column.cast(pa.string())
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=names)

reader = (for_cache(b) for b in batches())
first = next(reader)
stream = pa.RecordBatchReader.from_batches(first.schema, __import__("itertools").chain([first], reader))
if dst_kind == "duckdb":
    import duckdb
    con = duckdb.connect(dst)
    con.execute("DROP TABLE IF EXISTS work_orders")
    con.execute("BEGIN")
    con.execute("CREATE TABLE work_orders AS SELECT * FROM stream LIMIT 0")
    con.execute("ALTER TABLE work_orders ADD PRIMARY KEY (order_id)")
    con.execute("INSERT INTO work_orders SELECT * FROM stream")
    con.execute("COMMIT")  # the key only: a DuckDB cache has no watermark index (zonemaps)
else:
    if dst_kind == "sqlite":
        import adbc_driver_sqlite.dbapi as adbc
    else:
        import adbc_driver_postgresql.dbapi as adbc
    with adbc.connect(dst) as con, con.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS work_orders")
        cur.adbc_ingest("work_orders", pa.RecordBatchReader.from_batches(first.schema, []), mode="create")
        if dst_kind == "sqlite":  # no ALTER ... ADD PRIMARY KEY in SQLite: a unique index
            cur.execute("CREATE UNIQUE INDEX pk_hand_wo ON work_orders (order_id)")
        else:
            cur.execute("ALTER TABLE work_orders ADD PRIMARY KEY (order_id)")
        cur.adbc_ingest("work_orders", stream, mode="append")
        cur.execute(KEY)
        con.commit()
'''


@dataclass
class Row:
    wall: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)


class Pairs(Bench):
    def sync_seconds(self) -> float:
        """The sync's own duration as its materialization records it (`sync_assets/duration_s`:
        read, load, commit and the clean-up after it); sync_log's ends at the commit."""
        import dagster as dg

        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            (record,) = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey(["bench", "work_orders"]), asset_partitions=["mass"]
                ),
                limit=1,
            ).records
        return float(record.asset_materialization.metadata["sync_assets/duration_s"].value)

    def dagster_floor(self) -> tuple[float, float]:
        """The same command, on the same instance, for an asset that does nothing: Dagster's own cost."""
        noop = self.folder / "noop_defs.py"
        noop.write_text(NOOP_DEFINITIONS)
        env = {**os.environ, "DAGSTER_HOME": str(self.home)}
        dagster = str(Path(sys.executable).parent / "dagster")
        return measure([dagster, "asset", "materialize", "-f", str(noop), "--select", "noop"], env)

    def setup_sources(self) -> None:
        super().setup()
        self.duckdb_source = self.folder / "source.duckdb"
        build = self.catalog("build_duckdb", self.url("src"), f"duckdb:///{self.duckdb_source}")
        self.sync(build, "mass")
        import duckdb

        with duckdb.connect(str(self.duckdb_source)) as db:
            db.execute("DROP TABLE IF EXISTS sync_log")
        self.sqlalchemy_urls = {
            "postgresql": self.url("src"),
            "sqlite": f"sqlite:///{self.sqlite_source}",
            "duckdb": f"duckdb:///{self.duckdb_source}",
        }
        with self.admin.connect() as conn:
            for db in ("pair_hand", "pair_sync", "pair_dlt", "pair_sling"):
                conn.execute(sa.text(f"CREATE DATABASE {db}"))

    def cache(self, kind: str, who: str) -> tuple[str, str]:
        """The cache database of `who` (hand, sync, dlt, sling): its SQLAlchemy URL and a plain path/URI."""
        if kind == "postgresql":
            return self.url(f"pair_{who}"), f"postgresql:///pair_{who}?host={self.socket}&user=postgres"
        path = self.folder / f"{who}.{kind}"
        return f"{kind}:///{path}", str(path)

    def source_plain(self, kind: str) -> str:
        if kind == "postgresql":
            return f"postgresql:///src?host={self.socket}&user=postgres"
        return str(self.sqlite_source if kind == "sqlite" else self.duckdb_source)

    def hand(self, src: str, dst: str) -> tuple[float, float]:
        _, target = self.cache(dst, "hand")
        return measure([sys.executable, "-c", PIPELINE, src, self.source_plain(src), dst, target])

    def dlt_pair(self, src: str, dst: str) -> tuple[float, float]:
        source = dlt_url(self.sqlalchemy_urls[src])
        if dst == "postgresql":
            target = f"dlt.destinations.postgres({dlt_url(self.cache('postgresql', 'dlt')[0])!r})"
            extra = ', loader_file_format="parquet"'
        elif dst == "duckdb":
            target = f"dlt.destinations.duckdb({str(self.folder / 'dlt.duckdb')!r})"
            extra = ""
        else:
            target = f"dlt.destinations.sqlalchemy('sqlite:///{self.folder / 'dlt.sqlite'}')"
            extra = ""
        script = textwrap.dedent(f"""
            import dlt
            from dlt.sources.sql_database import sql_table
            rows = sql_table(credentials={source!r}, table="work_orders", backend="pyarrow",
                             chunk_size=100000)
            pipeline = dlt.pipeline(pipeline_name="pair", destination={target},
                                    dataset_name="bench", pipelines_dir={str(self.folder / "dlt_pairs")!r})
            pipeline.run(rows, write_disposition="replace"{extra})
            """)
        return measure([sys.executable, "-c", script], {**os.environ, "RUNTIME__LOG_LEVEL": "WARNING"})

    def sling_pair(self, binary: str, src: str, dst: str) -> tuple[float, float]:
        def conn(kind: str, who: str | None) -> str:
            if kind == "postgresql":
                db = "src" if who is None else "pair_sling"
                return f"postgresql://postgres:bench@127.0.0.1:{self.tcp_port}/{db}?sslmode=disable"
            path = self.sqlite_source if who is None else self.folder / "sling.sqlite"
            return f"sqlite://{path}"

        stream = "public.work_orders" if src == "postgresql" else "main.work_orders"
        target = "public.work_orders" if dst == "postgresql" else "main.work_orders"
        env = {
            **os.environ,
            "SLING_SRC": conn(src, None),
            "SLING_TGT": conn(dst, "sling"),
            "SLING_HOME_DIR": str(self.folder / "sling"),
            "SLING_DISABLE_TELEMETRY": "true",
            "SQLITE_PATH": shutil.which("sqlite3") or "sqlite3",
        }
        command = [binary, "run", "--src-conn", "SLING_SRC", "--src-stream", stream]
        command += ["--tgt-conn", "SLING_TGT", "--tgt-object", target, "--mode", "full-refresh"]
        return measure(command, env)


def dlt_url(url: str) -> str:
    """dlt's form of a PostgreSQL URL (psycopg2, and a password it insists on)."""
    return url.replace("postgresql+psycopg://postgres@", "postgresql://postgres:bench@localhost")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only-sync", action="store_true", help="sync_assets alone (no pipeline or peers)")
    parser.add_argument(
        "--rss-rows", type=int, help="then one sync per pair at this many rows: peak RSS against --rows"
    )
    parser.add_argument(
        "--pair", action="append", choices=[f"{s}->{d}" for s, d in PAIRS], help="only this pair (repeatable)"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sync_assets_pairs_"))
    try:
        figures = run(args.rows, args.runs, folder, only_sync=args.only_sync, pairs=args.pair)
        if args.rss_rows:
            rss_growth(figures, args.rows, args.rss_rows, folder / "rss", pairs=args.pair)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(
    rows: int, runs: int, folder: Path, *, only_sync: bool, pairs: list[str] | None = None
) -> dict[tuple[str, str], Row]:
    bench = Pairs(rows, folder)
    bench.setup_sources()
    has_dlt = not only_sync and importlib.util.find_spec("dlt") is not None
    sling = None if only_sync else _sling_binary()
    has_sling = sling is not None and bench.start_tcp()
    if not only_sync and not has_dlt:
        print("dlt is not installed: its rows are skipped (pip install -e '.[bench]')")
    if not only_sync and not has_sling:
        print(
            "Sling or socat is not installed: its rows are skipped "
            "(pip install -e '.[bench]'; apt-get install socat)"
        )
    figures: dict[tuple[str, str], Row] = {}
    for round_ in range(1, runs + 1):
        print(f"round {round_}/{runs}", flush=True)
        wall, rss = bench.dagster_floor()
        note(figures, "-", "F Dagster's floor (no-op asset)", wall, rss)
        for src, dst in PAIRS:
            pair = f"{src}->{dst}"
            if pairs and pair not in pairs:
                continue
            if not only_sync:
                bench.vacuum()
                wall, rss = bench.hand(src, dst)
                note(figures, pair, "H hand-written ADBC pipeline", wall, rss)
            url, _ = bench.cache(dst, "sync")
            catalog = bench.catalog(f"pair_{src}_{dst}", bench.sqlalchemy_urls[src], url)
            wall, rss = bench.sync(catalog, "mass")
            _, n = bench.own_seconds(url)
            assert n == rows, f"{pair}: {n} rows synced"
            own = bench.sync_seconds()
            note(figures, pair, "S sync_assets mass", wall, rss, own=own)
            if has_dlt and src == "duckdb":
                print(
                    f"  {pair:22} D dlt: skipped, its sql_database cannot reflect a DuckDB table here "
                    "(duckdb_engine's PostgreSQL reflection asks for pg_catalog.pg_collation)"
                )
            elif has_dlt:
                wall, rss = bench.dlt_pair(src, dst)
                note(figures, pair, "D dlt replace", wall, rss)
            if has_sling and sling is not None and "duckdb" not in pair:
                wall, rss = bench.sling_pair(sling, src, dst)
                note(figures, pair, "L Sling full-refresh", wall, rss)
    bench.stop()
    report(figures)
    return figures


def rss_growth(
    figures: dict[tuple[str, str], Row], rows: int, more: int, folder: Path, *, pairs: list[str] | None
) -> None:
    """Each pair's sync once more, on sources of `more` rows: its peak RSS against the median at `rows`."""
    folder.mkdir()
    bench = Pairs(more, folder)
    bench.setup_sources()
    grown: dict[str, float] = {}
    for src, dst in PAIRS:
        pair = f"{src}->{dst}"
        if pairs and pair not in pairs:
            continue
        url, _ = bench.cache(dst, "sync")
        catalog = bench.catalog(f"pair_{src}_{dst}", bench.sqlalchemy_urls[src], url)
        wall, rss = bench.sync(catalog, "mass")
        _, n = bench.own_seconds(url)
        assert n == more, f"{pair}: {n} rows synced"
        print(
            f"  {pair:22} S at {more:,} rows: {wall:.2f} s process, {bench.sync_seconds():.2f} s sync, "
            f"{rss:.0f} MiB",
            flush=True,
        )
        grown[pair] = rss
    bench.stop()
    print()
    print(f"{'pair':22} {f'peak MiB at {rows:,}':>20} {f'at {more:,}':>14} {'ratio':>6}")
    for pair, rss in grown.items():
        base = statistics.median(figures[(pair, "S sync_assets mass")].rss)
        print(f"{pair:22} {base:20.0f} {rss:14.0f} {rss / base:6.2f}")


def note(
    figures: dict[tuple[str, str], Row],
    pair: str,
    name: str,
    wall: float,
    rss: float,
    *,
    own: float | None = None,
) -> None:
    row = figures.setdefault((pair, name), Row())
    row.wall.append(wall)
    row.own.append(wall if own is None else own)
    row.rss.append(rss)
    print(f"  {pair:22} {name}: {wall:.2f} s process, {row.own[-1]:.2f} s sync, {rss:.0f} MiB", flush=True)


def report(figures: dict[tuple[str, str], Row]) -> None:
    print()
    print(
        f"{'pair':22} {'scenario':30} {'sync s':>8} {'process s':>10} {'CLI cost s':>11} "
        f"{'peak MiB':>9} {'x hand':>7} {'S faster':>9}"
    )
    for (pair, name), row in figures.items():
        own, wall, rss = statistics.median(row.own), statistics.median(row.wall), statistics.median(row.rss)
        hand = figures.get((pair, "H hand-written ADBC pipeline"))
        ours = figures.get((pair, "S sync_assets mass"))
        ratio = f"{own / statistics.median(hand.wall):.2f}" if hand else "-"
        cli = f"{wall - own:.2f}" if name.startswith("S") else "-"
        faster = f"{wall / statistics.median(ours.wall):.1f}x" if ours and name[0] in "DL" else "-"
        print(f"{pair:22} {name:30} {own:8.2f} {wall:10.2f} {cli:>11} {rss:9.0f} {ratio:>7} {faster:>9}")


if __name__ == "__main__":
    main()
