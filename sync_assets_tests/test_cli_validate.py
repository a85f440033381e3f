"""`sync-assets validate` (issue 10): what the code location would refuse, without Dagster, a
database or a secret; every catalog error with its file and line."""

from __future__ import annotations

import textwrap

from sync_assets.catalog.loader import DEMO_CATALOG
from sync_assets_tests.cli import cli_process, run_cli

GOOD = """\
connections:
  jde:   {url: "${JDE_URL}", password: "${JDE_PASSWORD}"}
  cache: {url: "sqlite:///cache.sqlite"}
cache: cache
defaults:
  schedules: {daily: "0 3 * * *"}
tables:
  - name: work_orders
    source: jde
    source_table: F4801
    primary_key: [order_id]
    updated_at: last_update_dt
    schedules: {daily: "30 6 * * 1-5", hourly: "0 * * * *"}
  - name: lots
    source: jde
    source_table: F4108
    primary_key: [lot_number]
"""


def _catalog(tmp_path, text: str):
    path = tmp_path / "catalog.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_catalog_is_summarised_without_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("JDE_URL", raising=False)
    monkeypatch.delenv("JDE_PASSWORD", raising=False)
    path = _catalog(tmp_path, GOOD)
    result = run_cli("validate", catalog=path, instance=None)
    assert result.exit_code == 0, result.output
    # work_orders' own daily and hourly; the default daily does not apply to mass-only lots.
    assert result.stdout == f"{path}: ok, 2 tables, 2 connections, 2 schedules\n"


def test_every_catalog_error_is_reported_with_its_line(tmp_path):
    broken = GOOD.replace("    source_table: F4801\n", "    source_table: F4801\n    batchsize: 10\n")
    broken += "    batch_size: many\n"
    path = _catalog(tmp_path, broken)
    result = run_cli("validate", catalog=path, instance=None)
    assert result.exit_code == 1
    assert f"{path}:11: table 'work_orders': batchsize: unknown key" in result.output
    assert f"{path}:19: table 'lots': batch_size: Input should be a valid integer" in result.output


def test_what_only_building_the_definitions_finds_fails_too(tmp_path):
    """Two tables that depend on each other load as a catalog; Dagster refuses the cycle."""
    cyclic = GOOD.replace(
        "    updated_at: last_update_dt\n", "    updated_at: last_update_dt\n    deps: [lots]\n"
    )
    cyclic += "    deps: [work_orders]\n"
    path = _catalog(tmp_path, cyclic)
    result = run_cli("validate", catalog=path, instance=None)
    assert result.exit_code == 1
    assert f"{path}: the catalog loads, but its definitions do not build: CircularDependencyError" in (
        result.output
    )


def test_the_default_catalog_in_a_real_process(tmp_path):
    """`python -m sync_assets.cli validate` without SYNC_ASSETS_CATALOG: the bundled demo catalog."""
    done = cli_process("validate", catalog=None, home=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{DEMO_CATALOG}: ok, 4 tables, 2 connections, 3 schedules\n"
    broken = _catalog(tmp_path, "connections: {}\n")
    done = cli_process("validate", "--catalog", str(broken), catalog=None, home=None)
    assert done.returncode == 1 and f"{broken}:1: " in done.stderr and "Traceback" not in done.stderr
