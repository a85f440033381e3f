"""Benchmark: the REST source's memory and speed against a bare HTTP client, in one run.

    .venv/bin/python bench/rest.py                  # 500,000 records, pages of 1,000, 3 rounds
    .venv/bin/python bench/rest.py --records 100000 --rounds 1

Starts a legacy-like JSON API on 127.0.0.1 in a process of its own (it generates its records page
by page, so it holds none of them), then measures per round, in turn:

  H1  the floor: httpx fetching every page and decoding its JSON, keeping nothing
  R1  sync_assets mass of the whole endpoint into a SQLite cache (`dagster asset materialize`)
  R2  the same for a tenth of the records: a peak RSS that stays flat shows memory is bounded by
      a batch, not by the endpoint's size

Each figure is a median of the rounds: the process tree's wall time and peak RSS, the sync's own
duration (sync_log) and its ratio to H1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psutil

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 3, 1, tzinfo=UTC)


def record(i: int) -> dict[str, object]:
    return {
        "id": i,
        "name": f"product {i}",
        "price": round(i * 0.37 % 1000, 2),
        "modified_date": (START + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
        "active": i % 2 == 0,
        "dims": {"width": i % 97, "height": i % 89},
    }


def serve(port: int, records: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            offset, limit = int(query["offset"][0]), int(query["limit"][0])
            total = int(query.get("total", [records])[0])
            page = [record(i) for i in range(offset + 1, min(offset + limit, total) + 1)]
            body = json.dumps({"data": page, "total": total}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the command's process tree."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"failed: {command}\n{process.stderr.read().decode()[-3000:]}")  # noqa: EM102
    return wall, peak / 2**20


FLOOR = textwrap.dedent(
    """
    import sys, httpx
    url, total, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with httpx.Client() as client:
        for offset in range(0, total, size):
            client.get(url, params={"offset": offset, "limit": size, "total": total}).json()
    """
)


def catalog(folder: Path, name: str, records: int, page_size: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        json.dumps(
            {
                "connections": {
                    "api": {"type": "rest", "base_url": "${BENCH_API_URL}"},
                    "cache": {"url": f"sqlite:///{folder / name}.sqlite"},
                },
                "cache": "cache",
                "tables": [
                    {
                        "name": "products",
                        "source": "api",
                        "endpoint": f"/api/products?total={records}",
                        "records": "data",
                        "paginate": {"style": "offset", "page_size": page_size},
                        "primary_key": ["id"],
                        "updated_at": "modified_date",
                        "schema": {"price": "decimal(12,2)"},
                    }
                ],
            }
        )
    )
    return path


def own_seconds(cache: Path) -> float:
    with sqlite3.connect(cache) as conn:
        started, finished = conn.execute(
            "SELECT started_at, finished_at FROM sync_log ORDER BY id DESC LIMIT 1"
        ).fetchone()
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--page-size", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = multiprocessing.Process(target=serve, args=(port, args.records), daemon=True)
    server.start()
    time.sleep(0.5)
    url = f"http://127.0.0.1:{port}/"
    python = sys.executable
    dagster = str(Path(python).with_name("dagster"))
    figures: dict[str, dict[str, list[float]]] = {}
    small = max(args.records // 10, args.page_size)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            home = folder / "dagster_home"
            home.mkdir()
            (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
            for round_ in range(args.rounds):
                print(f"round {round_ + 1} of {args.rounds}", file=sys.stderr)
                wall, rss = measure(
                    [python, "-c", FLOOR, url + "api/products", str(args.records), str(args.page_size)],
                    dict(os.environ),
                )
                figures.setdefault("H1", {}).setdefault("wall", []).append(wall)
                figures["H1"].setdefault("rss", []).append(rss)
                for name, records in (("R1", args.records), ("R2", small)):
                    path = catalog(folder, f"{name}_{round_}", records, args.page_size)
                    env = {
                        **os.environ,
                        "DAGSTER_HOME": str(home),
                        "SYNC_ASSETS_CATALOG": str(path),
                        "BENCH_API_URL": url,
                    }
                    command = [
                        dagster,
                        "asset",
                        "materialize",
                        "-m",
                        "sync_assets.definitions",
                        "--select",
                        "*",
                        "--partition",
                        "mass",
                    ]
                    wall, rss = measure(command, env)
                    entry = figures.setdefault(name, {})
                    entry.setdefault("wall", []).append(wall)
                    entry.setdefault("rss", []).append(rss)
                    entry.setdefault("own", []).append(own_seconds(folder / f"{name}_{round_}.sqlite"))
    finally:
        server.terminate()
    floor = statistics.median(figures["H1"]["wall"])
    print(f"\nREST source, {args.records:,} records in pages of {args.page_size:,}; medians of {args.rounds}")
    print(f"{'':4} {'records':>9} {'wall s':>8} {'own s':>8} {'rec/s':>9} {'peak RSS MiB':>13} {'vs H1':>6}")
    for name, records in (("H1", args.records), ("R1", args.records), ("R2", small)):
        entry = figures[name]
        wall = statistics.median(entry["wall"])
        own = statistics.median(entry["own"]) if "own" in entry else wall
        ratio = f"{own / floor:.2f}" if name == "R1" else ""
        print(
            f"{name:4} {records:>9,} {wall:>8.2f} {own:>8.2f} {records / own:>9,.0f} "
            f"{statistics.median(entry['rss']):>13.0f} {ratio:>6}"
        )


if __name__ == "__main__":
    main()
