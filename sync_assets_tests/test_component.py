"""The SyncCatalog component in a fresh `dg` project: scaffolded, checked, listed, loaded and run.

The project comes from `create-dagster project`; every `dg` command runs as a user would run it,
in its own process (a few seconds each, so they are few).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster.components.core.package_entry import (
    DG_PLUGIN_ENTRY_POINT_GROUP,
    discover_entry_point_package_objects,
)
from dagster_shared.serdes.objects import EnvRegistryKey

from sync_assets import SyncCatalog
from sync_assets.catalog.loader import DEMO_CATALOG
from sync_assets_tests.dagster_dev import demo_home
from sync_assets_tests.helpers import ORDERS, create_source, order_row, read_rows

BIN = Path(sys.executable).parent
PACKAGE = "erp_project"
DEMO_TABLES = ["item_ledger", "items", "lots", "work_orders"]

# A subclass in the project's own code: the translator is the override point for asset keys.
CUSTOM_COMPONENT = """
import dagster as dg

from sync_assets import SyncAssetTranslator, SyncCatalog


class ErpTranslator(SyncAssetTranslator):
    def get_asset_key(self, table):
        return dg.AssetKey(["erp", table.name])


class ErpCatalog(SyncCatalog):
    def get_translator(self):
        return ErpTranslator()
"""


def run(command: list[str], project: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command of the venv (`dg`, `create-dagster`) in `project`, as from an activated venv in
    which the project is installed (its src/ on the path)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_ASSETS")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(BIN.parent),
        PYTHONPATH=str(project / "src"),
        DAGSTER_HOME=str(project.parent / "dagster_home"),
        # create-dagster would ask PyPI whether it is outdated.
        DAGSTER_DG_UPDATE_CHECK_ENABLED="0",
        NO_COLOR="1",
        COLUMNS="200",
    )
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh project with the scaffolded component erp_cache (the demo catalog, inline)."""
    root = tmp_path_factory.mktemp("dg")
    demo_home(root / "dagster_home")
    run(["create-dagster", "project", PACKAGE, "--no-uv-sync"], root)
    path = root / PACKAGE
    run(["dg", "scaffold", "defs", "sync_assets.SyncCatalog", "erp_cache"], path)
    return path


def copy_project(project: Path, tmp_path: Path) -> Path:
    """A copy of the project that a test may change."""
    shutil.copytree(project.parent / "dagster_home", tmp_path / "dagster_home")
    return Path(shutil.copytree(project, tmp_path / PACKAGE))


def defs_yaml(project: Path, name: str = "erp_cache") -> Path:
    return project / "src" / PACKAGE / "defs" / name / "defs.yaml"


def test_registered_for_dg() -> None:
    """`dg list components` lists what this entry point group names: sync_assets.SyncCatalog."""
    assert DG_PLUGIN_ENTRY_POINT_GROUP == "dagster_dg_cli.registry_modules"
    objects = discover_entry_point_package_objects()
    assert objects[EnvRegistryKey(name="SyncCatalog", namespace="sync_assets")] is SyncCatalog


def test_scaffolded_catalog_checks_and_lists_one_asset_per_table(project: Path) -> None:
    scaffolded = yaml.safe_load(defs_yaml(project).read_text())
    assert scaffolded["type"] == "sync_assets.SyncCatalog"
    assert [t["name"] for t in scaffolded["attributes"]["tables"]] == [
        "items",
        "work_orders",
        "item_ledger",
        "lots",
    ]

    checked = run(["dg", "check", "defs"], project)
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr

    listed = json.loads(run(["dg", "list", "defs", "--json"], project).stdout)
    assets = {a["asset_key"]: a for a in listed["assets"]}
    assert sorted(assets) == [f"jde/{t}" for t in DEMO_TABLES]
    assert assets["jde/work_orders"]["dependency_keys"] == ["jde/items"]
    type_line = defs_yaml(project).read_text().splitlines().index("type: sync_assets.SyncCatalog") + 1
    assert assets["jde/items"]["source"] == f"src/{PACKAGE}/defs/erp_cache/defs.yaml:{type_line}"
    checks = {(c["asset_key"], c["name"]) for c in listed["asset_checks"]}
    assert {("jde/work_orders", "accepted_values_status_code"), ("jde/lots", "mass_fresh")} <= checks
    assert {s["name"] for s in listed["schedules"]} == {"sync_mass", "sync_daily", "sync_hourly"}
    assert {s["name"] for s in listed["sensors"]} == {
        "sync_freshness",
        "sync_failure_alerts",
        "sync_check_alerts",
    }
    assert {r["name"] for r in listed["resources"]} == {"jde", "cache", "sync_alerter"}


def test_catalog_mistakes_fail_dg_check_at_their_line_in_defs_yaml(project: Path, tmp_path: Path) -> None:
    broken = copy_project(project, tmp_path)
    path = defs_yaml(broken)
    lines = path.read_text().splitlines(keepends=True)
    typo = next(i for i, line in enumerate(lines) if line.strip() == "primary_key: [item_id]")
    lines[typo] = lines[typo].replace("primary_key", "primary_kee")
    path.write_text("".join(lines))

    checked = run(["dg", "check", "defs"], broken, check=False)
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0
    assert f"{path}:{typo + 1}: table 'items': primary_kee: unknown key" in output
    item = next(i for i, line in enumerate(lines) if line.strip() == "- name: items")
    assert f"{path}:{item + 1}: table 'items': primary_key: required key is missing" in output


@pytest.fixture
def import_project() -> Iterator[None]:
    """Forget the project's modules afterwards: another test's copy has the same names."""
    yield
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


def test_catalog_file_with_a_custom_translator_loads_and_syncs_each_table(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, import_project: None
) -> None:
    """A subclass scaffolded with --catalog-file; loaded in-process, one table synced while
    another one fails in the same run."""
    copy = copy_project(project, tmp_path)
    shutil.rmtree(defs_yaml(copy).parent)  # one SyncCatalog per code location (see README)
    components = copy / "src" / PACKAGE / "components"
    components.mkdir()
    (components / "__init__.py").write_text("")
    (components / "erp.py").write_text(CUSTOM_COMPONENT)
    source = sa.make_url(f"sqlite:///{tmp_path / 'source.sqlite'}")
    cache = sa.make_url(f"sqlite:///{tmp_path / 'cache.sqlite'}")
    create_source(source, [order_row(i) for i in range(1, 51)])
    scaffold = ["dg", "scaffold", "defs", f"{PACKAGE}.components.erp.ErpCatalog", "erp_file"]
    run([*scaffold, "--catalog-file", "erp.yaml"], copy)
    assert yaml.safe_load(defs_yaml(copy, "erp_file").read_text()) == {
        "type": f"{PACKAGE}.components.erp.ErpCatalog",
        "attributes": {"catalog_file": "erp.yaml"},
    }
    catalog_file = defs_yaml(copy, "erp_file").parent / "erp.yaml"
    assert catalog_file.read_text() == DEMO_CATALOG.read_text()  # a starter, as it did not exist
    catalog = {
        "connections": {"erp": {"url": str(source)}, "warehouse": {"url": str(cache)}},
        "cache": "warehouse",
        "tables": [
            {"source": "erp", **ORDERS},
            {"source": "erp", **ORDERS, "name": "ghost", "source_table": "no_such_table"},
        ],
    }
    catalog_file.write_text(yaml.safe_dump(catalog, sort_keys=False))

    monkeypatch.syspath_prepend(str(copy / "src"))
    defs = importlib.import_module(f"{PACKAGE}.definitions").defs()
    orders, ghost = dg.AssetKey(["erp", "orders"]), dg.AssetKey(["erp", "ghost"])
    assert set(defs.resolve_asset_graph().get_all_asset_keys()) == {orders, ghost}

    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key="mass",
        asset_selection=[orders, ghost],
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {orders}
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == ghost.to_python_identifier()
    assert "no_such_table" in failure.step_failure_data.error.message
    assert len(read_rows(cache, "orders")) == 50


def test_catalog_file_and_inline_catalog_exclude_each_other(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, import_project: None
) -> None:
    copy = copy_project(project, tmp_path)
    path = defs_yaml(copy)
    text = path.read_text().replace("attributes:\n", "attributes:\n  catalog_file: elsewhere.yaml\n", 1)
    path.write_text(text)
    line = text.splitlines().index("  catalog_file: elsewhere.yaml") + 1
    monkeypatch.syspath_prepend(str(copy / "src"))
    with pytest.raises(Exception) as raised:
        dg.load_from_defs_folder(path_within_project=copy / "src" / PACKAGE)
    causes = []
    error: BaseException | None = raised.value
    while error is not None:
        causes.append(error)
        error = error.__cause__
    assert (
        f"{path}:{line}: `catalog_file` and an inline catalog (connections, cache, defaults, tables) exclude each other: keep one"
        in [str(e) for e in causes]
    )


def test_python_scaffold_loads_the_starter_catalog_file(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, import_project: None
) -> None:
    """`--format python`: a component.py returning SyncCatalog(catalog_file=...), next to the file."""
    copy = copy_project(project, tmp_path)
    shutil.rmtree(defs_yaml(copy).parent)
    run(["dg", "scaffold", "defs", "sync_assets.SyncCatalog", "erp_py", "--format", "python"], copy)
    folder = copy / "src" / PACKAGE / "defs" / "erp_py"
    assert sorted(p.name for p in folder.iterdir()) == ["catalog.yaml", "component.py"]
    monkeypatch.syspath_prepend(str(copy / "src"))
    defs = dg.load_from_defs_folder(path_within_project=copy / "src" / PACKAGE)
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert sorted(k.to_user_string() for k in keys) == [f"jde/{t}" for t in DEMO_TABLES]
