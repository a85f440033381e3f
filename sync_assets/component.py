"""`sync_assets.SyncCatalog`: a table catalog as a Dagster Component, for projects laid out by `dg`.

    dg scaffold defs sync_assets.SyncCatalog erp_cache   # defs.yaml with a working starter catalog
    dg check defs                                        # catalog errors as defs.yaml:LINE
    dg list defs                                         # one asset per table

The catalog sits in the component's defs.yaml under `attributes:` (the keys of a catalog file),
or `catalog_file:` names a catalog file. Either way the definitions are `build_definitions`'s, as
for the `sync_assets.definitions` code location: one asset per table, so one failed table never
fails the others. Subclass and override `get_translator` to change keys, groups or tags.
"""

from pathlib import Path
from typing import Annotated, Any, Self

import dagster as dg
from dagster_shared.yaml_utils.source_position import SourcePositionTree
from pydantic import BaseModel, Field, PrivateAttr

from sync_assets.assets.factory import build_definitions
from sync_assets.assets.translator import SyncAssetTranslator
from sync_assets.catalog.loader import DEMO_CATALOG, Location, load_catalog, validate_catalog
from sync_assets.catalog.models import Catalog
from sync_assets.errors import CatalogError

# The catalog's own keys, kept as written: Dagster's templating would render every string through
# Jinja's native types ("10" becomes the integer 10), and the catalog has its own ${VAR}
# placeholders, resolved at run time so that no secret reaches the UI.
INLINE_KEYS = ("connections", "cache", "defaults", "alerts", "execution", "tables")


def _as_written(description: str) -> dg.Resolver:
    return dg.Resolver.passthrough(description=description)


class SyncCatalogScaffoldParams(BaseModel):
    """`dg scaffold defs sync_assets.SyncCatalog NAME [--catalog-file FILE]`."""

    catalog_file: str | None = Field(
        default=None,
        description="point the component at this catalog file (relative to its folder); "
        "a starter catalog is written there when it does not exist",
    )


class SyncCatalogScaffolder(dg.Scaffolder[SyncCatalogScaffoldParams]):
    """A defs.yaml that loads as it is: the embedded demo (a generated SQLite source and cache)."""

    @classmethod
    def get_scaffold_params(cls) -> type[SyncCatalogScaffoldParams]:
        return SyncCatalogScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[SyncCatalogScaffoldParams]) -> None:
        folder = request.target_path
        folder.mkdir(parents=True, exist_ok=True)
        catalog_file = request.params.catalog_file if request.params else None
        if request.scaffold_format == "python":
            catalog_file = catalog_file or "catalog.yaml"
        if catalog_file:
            target = folder / catalog_file
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(DEMO_CATALOG.read_text(encoding="utf-8"), encoding="utf-8")
        module, _, name = request.type_name.rpartition(".")
        if request.scaffold_format == "python":
            (folder / "component.py").write_text(
                f'"""The sync_assets catalog {catalog_file} as Dagster definitions."""\n\n'
                "import dagster as dg\n\n"
                f"from {module} import {name}\n\n\n"
                "@dg.component_instance\n"
                f"def load(context: dg.ComponentLoadContext) -> {name}:\n"
                f"    return {name}(catalog_file={catalog_file!r})\n",
                encoding="utf-8",
            )
            return
        if catalog_file:
            attributes = f"attributes:\n  catalog_file: {catalog_file}\n"
        else:
            demo = DEMO_CATALOG.read_text(encoding="utf-8")
            attributes = "attributes:\n" + "".join(
                f"  {line}" if line.strip() else line for line in demo.splitlines(keepends=True)
            )
        text = (
            '# A sync_assets table catalog (README: "The table catalog"): the keys of a catalog file\n'
            "# under `attributes:`, or `catalog_file: FILE`. `dg check defs` names a mistake's line.\n"
            f"type: {request.type_name}\n\n{attributes}"
        )
        target = folder / "defs.yaml"
        if request.append and target.exists():
            text = target.read_text(encoding="utf-8").rstrip("\n") + "\n---\n" + text
        target.write_text(text, encoding="utf-8")


@dg.scaffold_with(SyncCatalogScaffolder)
class SyncCatalog(dg.Component, dg.Resolvable, dg.Model):
    """A sync_assets table catalog as Dagster definitions: one asset per table, with its checks,
    schedules, sensors and resources.

    Either `catalog_file:` (a catalog file, relative to this defs.yaml's folder) or the catalog's
    keys inline: connections, cache, defaults, alerts, execution, tables.
    """

    catalog_file: Annotated[
        str | None, dg.Resolver.default(description="a catalog file, relative to this defs.yaml's folder")
    ] = None
    connections: Annotated[Any, _as_written("the databases, APIs and folders; one is the cache")] = None
    cache: Annotated[Any, _as_written("the connection the tables are cached into")] = None
    defaults: Annotated[Any, _as_written("what every table inherits (batch_size, schedules...)")] = None
    alerts: Annotated[Any, _as_written("where failures are announced (webhook_url)")] = None
    execution: Annotated[Any, _as_written("how runs execute (single_table_in_process)")] = None
    tables: Annotated[Any, _as_written("the tables to keep in sync, one asset each")] = None

    # The defs.yaml positions, for errors at their line: Dagster hands them to `load` only.
    _yaml: SourcePositionTree | None = PrivateAttr(default=None)

    @classmethod
    def load(cls, attributes: BaseModel | None, context: dg.ComponentLoadContext) -> Self:
        component = super().load(attributes, context)
        component._yaml = context.resolution_context.source_position_tree
        return component

    def get_translator(self) -> SyncAssetTranslator:
        """The override point for asset keys, groups, owners and tags: return a subclass."""
        return SyncAssetTranslator()

    def load_catalog(self, context: dg.ComponentLoadContext) -> Catalog:
        """The validated catalog; raises CatalogError naming the file and line at fault."""
        inline = {key: getattr(self, key) for key in INLINE_KEYS if getattr(self, key) is not None}
        position = self._yaml
        # The component's folder, also when it is a component.py (`dg scaffold --format python`).
        folder = context.path if context.path.is_dir() else context.path.parent
        where = Path(position.position.filename) if position else context.path
        if self.catalog_file is not None:
            if inline:
                line = _lines(position).get(("attributes", "catalog_file"), 1) if position else 1
                msg = (
                    f"{where}:{line}: `catalog_file` and an inline catalog "
                    f"({', '.join(inline)}) exclude each other: keep one"
                )
                raise CatalogError(msg)
            return load_catalog(folder / self.catalog_file)
        if not inline:
            line = _lines(position).get(("attributes",), 1) if position else 1
            msg = (
                f"{where}:{line}: no catalog: give `catalog_file:` or the catalog's keys "
                f"({', '.join(INLINE_KEYS)}) under `attributes:`"
            )
            raise CatalogError(msg)
        lines: dict[Location, int] = {}
        if position is not None:
            lines = {loc[1:]: line for loc, line in _lines(position).items() if loc[:1] == ("attributes",)}
        return validate_catalog(inline, where, lines)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_definitions(self.load_catalog(context), translator=self.get_translator())


def _lines(tree: SourcePositionTree, path: Location = ()) -> dict[Location, int]:
    """Dagster's position tree of a YAML document as loader.py's line index: a mapping's entry at
    the line of its key, a list item at its own line."""
    lines = {path: tree.position.start.line}
    for key, child in tree.children.items():
        lines.update(_lines(child, (*path, key)))
    return lines
