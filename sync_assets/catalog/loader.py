"""YAML -> Catalog. Every error names the file, the line and, where there is one, the table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sync_assets.catalog.models import CONNECTION_KINDS, Catalog
from sync_assets.errors import CatalogError

CATALOG_ENV_VAR = "SYNC_ASSETS_CATALOG"
DEMO_CATALOG = Path(__file__).resolve().parent.parent / "demo" / "catalog.yaml"

Location = tuple[str | int, ...]
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def catalog_path() -> Path:
    """The catalog named by SYNC_ASSETS_CATALOG, else the bundled demo catalog."""
    value = os.environ.get(CATALOG_ENV_VAR)
    return Path(value).expanduser() if value else DEMO_CATALOG


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Parse and validate a catalog file; raises CatalogError listing every problem found."""
    file = Path(path) if path is not None else catalog_path()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        msg = f"{file}: cannot read the table catalog: {err.strerror}"
        raise CatalogError(msg) from err
    # Parsed once, by libyaml where it is built in (docs/performance.md); the node tree gives the
    # line index, then becomes the data.
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            msg = f"{file}:1: the table catalog is empty"
            raise CatalogError(msg)
        lines: dict[Location, int] = {}
        _index_lines(node, (), lines, file)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else 1
        msg = f"{file}:{line}: invalid YAML: {err.problem}"
        raise CatalogError(msg) from err
    finally:
        loader.dispose()
    return validate_catalog(data, file, lines)


def validate_catalog(data: Any, file: str | os.PathLike[str], lines: dict[Location, int]) -> Catalog:
    """Parsed YAML -> Catalog, every problem reported as `file:line`; `lines` maps a location in
    `data` (keys and list indexes) to its line in `file`. Also used for a catalog kept inside
    another YAML file (the SyncCatalog component's defs.yaml)."""
    file = Path(file)
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as err:
        problems = [(_location(tuple(e["loc"])), _message(e)) for e in err.errors()]
        raise CatalogError(_report(file, data, lines, problems)) from None
    if problems := catalog.problems():
        raise CatalogError(_report(file, data, lines, problems))
    return catalog


def _index_lines(node: yaml.Node, path: Location, lines: dict[Location, int], file: Path) -> None:
    """Record the line of every key and item; refuse duplicate keys, which YAML would silently merge."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                msg = f"{file}:{key_node.start_mark.line + 1}: duplicate key '{key}'"
                raise CatalogError(msg)
            seen.add(key)
            _index_lines(value_node, (*path, key), lines, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines, file)


def _location(loc: Location) -> Location:
    """A pydantic error location as the file has it: without the tag of a connection's kind,
    which pydantic puts after the connection's name (connections.jde.sql.url)."""
    if len(loc) > 2 and loc[0] == "connections" and loc[2] in CONNECTION_KINDS:
        return (*loc[:2], *loc[3:])
    return loc


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    return str(error["msg"]).removeprefix("Value error, ")


def _report(file: Path, data: Any, lines: dict[Location, int], problems: list[tuple[Location, str]]) -> str:
    return "\n".join(_one(file, data, lines, loc, msg) for loc, msg in problems)


def _one(file: Path, data: Any, lines: dict[Location, int], loc: Location, msg: str) -> str:
    known = loc
    while known and known not in lines:
        known = known[:-1]
    line = lines.get(known, 1)
    table = ""
    if len(loc) >= 2 and loc[0] == "tables" and isinstance(loc[1], int):
        try:
            name = data["tables"][loc[1]].get("name")
        except (KeyError, IndexError, TypeError, AttributeError):
            name = None
        table = f"table '{name}': " if name else f"tables[{loc[1]}]: "
        loc = loc[2:]
    field = ".".join(str(p) for p in loc)
    return f"{file}:{line}: {table}{field + ': ' if field else ''}{msg}"
