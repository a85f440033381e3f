"""Running `sync-assets` in the tests: in-process through click's CliRunner, or as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
from click.testing import CliRunner, Result

from sync_assets.cli import main


def run_cli(*args: str, catalog: Path, instance: dg.DagsterInstance | None) -> Result:
    """`sync-assets ARGS` on `catalog`, with DAGSTER_HOME the instance's home (unset for None).

    A command must never end in a traceback, whatever it meets: that is asserted here.
    """
    home = instance.root_directory if instance is not None else None
    runner = CliRunner(env={"SYNC_ASSETS_CATALOG": str(catalog), "DAGSTER_HOME": home})
    result = runner.invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def status_json(catalog: Path, instance: dg.DagsterInstance | None, *tables: str) -> tuple[int, list[Any]]:
    """(exit code, the rows) of `sync-assets status --json`."""
    result = run_cli("status", "--json", *tables, catalog=catalog, instance=instance)
    return result.exit_code, json.loads(result.stdout)


def by_row(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["table"], row["update_type"]): row for row in rows}


def cli_process(
    *args: str, catalog: Path | None, home: Path | None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m sync_assets.cli ARGS` in its own process, as a terminal would run it (None:
    SYNC_ASSETS_CATALOG, or DAGSTER_HOME, unset)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SYNC_ASSETS_CATALOG", "DAGSTER_HOME")}
    if catalog is not None:
        env["SYNC_ASSETS_CATALOG"] = str(catalog)
    if home is not None:
        env["DAGSTER_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "sync_assets.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
