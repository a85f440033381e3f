"""deploy/: the image, the compose file and the Helm values, checked without Docker or Kubernetes.

No Docker engine runs here, so the image is never built: its Dockerfile is read, and the one step
that does the same on this machine (registering FreeTDS with unixODBC) is run. The Helm values are
checked for their wiring always, and against the chart's own values.schema.json when
SYNC_TEST_DAGSTER_CHART names a copy of the dagster chart. The instance config, deploy/dagster.yaml,
runs for real in test_production_instance.py.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sync_assets_tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHART_VARIABLE = "SYNC_TEST_DAGSTER_CHART"
FREETDS_TEMPLATE = Path("/usr/share/tdsodbc/odbcinst.ini")  # shipped by Debian's tdsodbc


def instructions() -> list[tuple[str, str]]:
    """deploy/Dockerfile as (INSTRUCTION, arguments): comment lines dropped, continuations joined."""
    lines = [
        line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = "\n".join(lines).replace("\\\n", " ")
    parsed = (line.strip().partition(" ") for line in joined.splitlines() if line.strip())
    return [(word.upper(), rest.strip()) for word, _, rest in parsed]


def run_steps() -> list[str]:
    """The shell commands of the RUN instructions, in order (`a && b` is two steps)."""
    return [step.strip() for kind, args in instructions() if kind == "RUN" for step in args.split("&&")]


def apt_installs() -> dict[str, list[str]]:
    """Each package an `apt-get install` step installs -> the variables that step sets."""
    installed: dict[str, list[str]] = {}
    for step in run_steps():
        words = shlex.split(step)
        assignments = [w for w in words if re.fullmatch(r"[A-Z_]+=\S*", w)]
        command = words[len(assignments) :]
        if command[:2] == ["apt-get", "install"]:
            installed.update({w: assignments for w in command[2:] if not w.startswith("-")})
    return installed


def test_image_installs_the_odbc_drivers_of_the_sources():
    installs = apt_installs()
    assert {"unixodbc", "tdsodbc", "msodbcsql18"} <= installs.keys(), installs
    assert "ACCEPT_EULA=Y" in installs["msodbcsql18"], "msodbcsql18 installs only with its EULA accepted"
    steps = run_steps()
    key = next(s for s in steps if "https://packages.microsoft.com/keys/microsoft.asc" in s)
    keyring = re.search(r"gpg --dearmor -o (\S+)", key)
    assert keyring and keyring[1].startswith(("/usr/share/keyrings/", "/etc/apt/keyrings/")), key
    repository = next(s for s in steps if "/etc/apt/sources.list.d/" in s)
    echo, line, redirect, target = shlex.split(repository)
    assert (echo, redirect) == ("echo", ">") and target.endswith(".list"), repository
    debian_12 = "https://packages.microsoft.com/debian/12/prod bookworm main"
    assert re.fullmatch(rf"deb \[arch=\S+ signed-by={re.escape(keyring[1])}\] {re.escape(debian_12)}", line)
    assert dict(instructions())["FROM"] == "python:3.11-slim-bookworm", "Microsoft's list is Debian 12's"
    # apt reads the new list before it installs the driver.
    install = next(i for i, s in enumerate(steps) if "msodbcsql18" in s)
    assert "apt-get update" in steps[steps.index(repository) : install]
    assert any("odbcinst -i -d -f /usr/share/tdsodbc/odbcinst.ini" in s for s in steps)


def test_the_images_freetds_registration_makes_the_driver_loadable(tmp_path):
    """The Dockerfile's own step, run here against an empty odbcinst.ini; run twice, as the
    package may have registered the driver already."""
    registrations = [s for s in run_steps() if "odbcinst -i" in s]
    assert len(registrations) == 1, "the Dockerfile registers FreeTDS in one step"
    step = registrations[0]
    if not shutil.which("odbcinst") or not FREETDS_TEMPLATE.exists():
        pytest.skip("needs unixODBC and FreeTDS: apt-get install unixodbc tdsodbc (`make test` does)")
    env = {**os.environ, "ODBCSYSINI": str(tmp_path)}
    for _ in range(2):
        subprocess.run(["sh", "-c", step], env=env, check=True, capture_output=True)
    registered = configparser.ConfigParser()
    registered.read(tmp_path / "odbcinst.ini")
    assert registered.sections() == ["FreeTDS"] and registered["FreeTDS"]["UsageCount"] == "1"
    # The name the Sybase URLs use; the driver itself answers (SQLSTATE 08S01: nothing listens).
    assert "driver=FreeTDS" in (ROOT / "README.md").read_text()
    probe = (
        "import pyodbc\n"
        f"try: pyodbc.connect('DRIVER={{FreeTDS}};SERVER=127.0.0.1;PORT={free_port()};TDS_Version=5.0', timeout=5)\n"
        "except pyodbc.Error as error: print(error.args[0], error.args[1])\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert answer.stdout.startswith("08S01 [08S01] [FreeTDS]"), answer.stdout + answer.stderr


def test_image_installs_the_source_extras_and_dagsters_integrations():
    (pip,) = [shlex.split(s) for s in run_steps() if s.startswith("pip install")]
    (project,) = [w for w in pip[2:] if w.startswith(".")]
    named = re.fullmatch(r"\.\[(.+)\]", project)
    assert named, f"the project is installed with its source extras, not as {project!r}"
    extras = set(named[1].split(","))
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= optional.keys()
    drivers = {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for e in extras for r in optional[e]}
    assert {"pyodbc", "oracledb", "sqlalchemy-sybase"} <= drivers  # SQL Server, Oracle (JDE), Sybase (CMS)
    pins = dict(w.split("==") for w in pip if "==" in w)
    # The integrations of the Dagster release this project runs and tests (0.29.x goes with 1.13.x).
    line = importlib.metadata.version("dagster-postgres").rsplit(".", 1)[0] + ".*"
    assert pins == {"dagster-postgres": line, "dagster-docker": line, "dagster-k8s": line}


def test_image_serves_the_code_location_on_the_deploy_instance():
    steps = dict(instructions())
    env = dict(pair.split("=", 1) for pair in shlex.split(steps["ENV"]))
    copies = [args.split() for kind, args in instructions() if kind == "COPY"]
    assert ["deploy/dagster.yaml", "${DAGSTER_HOME}/dagster.yaml"] in copies and env["DAGSTER_HOME"]
    assert ["deploy/workspace.yaml", "/opt/dagster/workspace.yaml"] in copies
    (server,) = [entry["grpc_server"] for entry in _yaml(DEPLOY / "workspace.yaml")["load_from"]]
    command = json.loads(steps["CMD"])
    assert command == [
        "dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(server["port"]),
        "-m", "sync_assets.definitions", "--location-name", server["location_name"],
    ]  # fmt: skip
    assert steps["EXPOSE"] == str(server["port"])
    compose = _yaml(DEPLOY / "docker-compose.yml")["services"]
    assert server["host"] in compose and compose[server["host"]]["build"]["dockerfile"] == "deploy/Dockerfile"
    for name in ("webserver", "daemon"):
        assert compose[name]["entrypoint"][-2:] == ["-w", "/opt/dagster/workspace.yaml"]
    # The run launcher forwards these variables by name: every process that launches runs has them.
    forwarded = _yaml(DEPLOY / "dagster.yaml")["run_launcher"]["config"]["env_vars"]
    for name in (server["host"], "webserver", "daemon"):
        assert set(forwarded) <= compose[name]["environment"].keys(), name


def test_helm_values_wire_the_code_location_and_the_deploy_instance():
    values = _yaml(DEPLOY / "helm" / "values.yaml")
    instance = _yaml(DEPLOY / "dagster.yaml")
    (server,) = [entry["grpc_server"] for entry in _yaml(DEPLOY / "workspace.yaml")["load_from"]]
    assert values["dagster-user-deployments"]["enabled"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"] == ["-m", "sync_assets.definitions"]
    assert deployment["port"] == server["port"]
    assert deployment["image"]["repository"] == "sync_assets"  # the image deploy/Dockerfile builds
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}  # runs get the same env

    # What the code location reads: deploy/dagster.yaml's variables, less Dagster's own storage
    # (the chart configures that); every connection setting from the Secret, none written here.
    env = {item["name"]: item for item in deployment["env"]}
    wanted = {
        name for name in instance["run_launcher"]["config"]["env_vars"] if not name.startswith("DAGSTER_PG_")
    }
    assert env.keys() == wanted
    from_secret = {name for name, item in env.items() if "secretKeyRef" in item.get("valueFrom", {})}
    assert from_secret == wanted - {"SYNC_ASSETS_CATALOG"}
    mounts = {m["name"]: m["mountPath"] for m in deployment["volumeMounts"]}
    (catalog,) = [
        name for name, path in mounts.items() if env["SYNC_ASSETS_CATALOG"]["value"].startswith(path + "/")
    ]
    assert catalog in {v["name"] for v in deployment["volumes"]}

    # The instance the chart writes: deploy/dagster.yaml's settings, in the chart's words.
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = instance["run_coordinator"]["config"] | {
        "max_concurrent_runs": instance["concurrency"]["runs"]["max_concurrent_runs"]
    }
    assert coordinator["config"]["queuedRunCoordinator"] == _camel(queued)
    assert values["concurrency"] == {"enabled": True, "pools": _camel(instance["concurrency"]["pools"])}
    assert values["dagsterDaemon"]["runMonitoring"] == _camel(instance["run_monitoring"])
    assert values["dagsterDaemon"]["runRetries"] == _camel(instance["run_retries"])
    scheme = instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["postgresql"]["postgresqlScheme"] == scheme
    assert values["telemetry"] == instance["telemetry"]


def test_helm_values_follow_the_charts_values_schema():
    """As `helm install` validates them: merged into the chart's defaults, against its schema."""
    location = os.environ.get(CHART_VARIABLE)
    if not location:
        pytest.skip(
            f"set {CHART_VARIABLE} to a copy of the dagster Helm chart (helm/dagster of dagster-io/dagster"
            " at the release's tag), or to its values.schema.json, to run"
        )
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (in the [test] extra)")
    chart = Path(location) if Path(location).is_dir() else Path(location).parent
    ours = _yaml(DEPLOY / "helm" / "values.yaml")
    problems = _problems(jsonschema, chart, ours)
    subchart = chart / "charts" / "dagster-user-deployments"
    if (subchart / "values.schema.json").exists():  # Helm validates a subchart's part with its schema
        part = ours["dagster-user-deployments"] | {"global": ours.get("global", {})}
        problems += [f"dagster-user-deployments: {p}" for p in _problems(jsonschema, subchart, part)]
    assert not problems, "\n".join(problems)


def _problems(jsonschema: Any, chart: Path, ours: dict[str, Any]) -> list[str]:
    """Schema errors of `ours` over the chart's defaults; without the defaults (a schema file alone),
    required keys that the defaults supply are not asked of `ours`."""
    schema = json.loads((chart / "values.schema.json").read_text())
    defaults = chart / "values.yaml"
    values = _coalesce(_yaml(defaults), ours) if defaults.exists() else ours
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    errors = validator(schema, registry=_offline(schema)).iter_errors(values)
    if not defaults.exists():
        errors = (e for e in errors if not _left_to_the_defaults(e))
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors)


def _coalesce(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values into a chart's: maps merge key by key, others replace, null deletes."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _coalesce(merged[key], value)
        else:
            merged[key] = value
    return merged


def _left_to_the_defaults(error: Any) -> bool:
    """A missing required key in a map the chart's defaults fill (a list of ours is all ours)."""
    if any(isinstance(part, int) for part in error.absolute_path):
        return False
    if error.validator == "required":
        return True
    if error.validator in ("anyOf", "oneOf"):
        branches: dict[Any, list[Any]] = defaultdict(list)
        for sub in error.context:
            branches[sub.relative_schema_path[0]].append(sub)
        return any(all(_left_to_the_defaults(sub) for sub in subs) for subs in branches.values())
    return False


def _offline(schema: dict[str, Any]) -> Any:
    """The Kubernetes schemas the chart names by URL, as empty schemas: nothing is fetched, and
    Kubernetes objects (env entries, volumes, probes, resources) are taken as written."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    stubs: dict[str, dict[str, Any]] = {}
    for ref in _refs(schema):
        uri, _, pointer = ref.partition("#")
        if not uri:
            continue
        node = stubs.setdefault(uri, {})
        for part in filter(None, pointer.split("/")):
            node = node.setdefault(part.replace("~1", "/").replace("~0", "~"), {})
    resources = [
        (uri, Resource.from_contents(doc, default_specification=DRAFT7)) for uri, doc in stubs.items()
    ]
    return Registry().with_resources(resources)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _camel(settings: dict[str, Any]) -> dict[str, Any]:
    return {re.sub(r"_(\w)", lambda m: m[1].upper(), key): value for key, value in settings.items()}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
