"""The bundled demo as `make demo` runs it: a DAGSTER_HOME with the repo's dagster.yaml, `dagster dev`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sync_assets_tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


def demo_home(path: Path) -> Path:
    """A persistent DAGSTER_HOME with the instance config `make demo` copies there."""
    path.mkdir()
    shutil.copy(ROOT / "dagster.yaml", path / "dagster.yaml")
    return path


def demo_env(home: Path, catalog: Path | None = None) -> dict[str, str]:
    """The demo's environment under `home`: the bundled catalog, or `catalog` when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_ASSETS")}
    env["DAGSTER_HOME"] = str(home)
    if catalog is not None:
        env["SYNC_ASSETS_CATALOG"] = str(catalog)
    return env


def run_demo_command(home: Path, *args: str, timeout: float = 600) -> str:
    """`python -m <args>` from the repo root on the demo; its output, or an error that shows it."""
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=demo_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def sync_every_table(home: Path, partition: str = "mass") -> None:
    """`make demo-run`: every demo table's `partition` through the `dagster asset materialize` CLI."""
    materialize = ["dagster", "asset", "materialize", "-m", "sync_assets.definitions", "--select", "*"]
    run_demo_command(home, *materialize, "--partition", partition)


@contextmanager
def running_dagster_dev(
    home: Path, log_path: Path, *, catalog: Path | None = None, startup_s: float = 180
) -> Iterator[int]:
    """`dagster dev` (webserver and daemon) on the demo, or on `catalog`; yields its port once the
    UI answers."""
    port = free_port()
    command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1"]
    command += ["-p", str(port)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=demo_env(home, catalog),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + startup_s
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                        break
                except OSError:
                    assert process.poll() is None, log_path.read_text()[-3000:]
                    assert time.monotonic() < deadline, "dagster dev did not come up"
                    time.sleep(0.5)
            yield port
        finally:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
