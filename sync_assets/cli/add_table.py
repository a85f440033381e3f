"""`sync-assets add-table`: catalog entries scaffolded from a source's own schema, printed or appended."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from sync_assets.assets.factory import resources_for
from sync_assets.catalog.append import append_items, item_indent
from sync_assets.catalog.introspect import IntrospectionError, ReflectedTable, describe, matching_tables
from sync_assets.catalog.jde_dictionary import SPECIFICATIONS_TABLE, Dictionary, find_in_source, from_file
from sync_assets.catalog.loader import load_catalog
from sync_assets.catalog.models import Catalog
from sync_assets.catalog.scaffold import Entry, is_identifier, jde_prefix, scaffold, snake_case
from sync_assets.cli.context import Unreachable, catalog_option, connected, fail, load
from sync_assets.errors import CatalogError
from sync_assets.resources.database import SqlDatabase


@click.command("add-table")
@click.argument("connection")
@click.argument("tables", nargs=-1, required=True)
@catalog_option
@click.option(
    "--write", is_flag=True, help="Append the entries to the catalog file, its text and comments kept."
)
@click.option(
    "--dictionary",
    "dictionary_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JDE data items (YAML or CSV): DOCO -> {decimals, description, name}. Default: F9210 in the source.",
)
@click.option(
    "--dictionary-schema",
    metavar="SCHEMA",
    help="Where JDE's F9210 is (e.g. DD920); default: beside the table, then the default schema.",
)
@click.option("--name", "table_name", help="The table's catalog name (one table only); default: snake_case.")
def add_table(
    connection: str,
    tables: tuple[str, ...],
    catalog_file: Path | None,
    write: bool,
    dictionary_file: Path | None,
    dictionary_schema: str | None,
    table_name: str | None,
) -> None:
    """Introspect TABLES of CONNECTION (NAME, SCHEMA.NAME or a pattern: 'PRODDTA.F48*') and print
    their `tables:` entries, or append them to the catalog with --write.

    Keys come from the source's constraints and unique indexes, the watermark from an indexed
    change timestamp (JDE: UPMJ + TDAY); a table without a key is written commented out.
    """
    path, catalog = load(catalog_file)
    database = _source(catalog, connection)
    try:
        dictionary = from_file(dictionary_file) if dictionary_file else None
        with connected(database, role="source") as (conn, dialect):
            found = matching_tables(conn, dialect, list(tables))
            reflected = [describe(conn, dialect, schema, name) for schema, name in found]
            if dictionary is None and any(jde_prefix(t) for t in reflected):
                schemas = (
                    [dictionary_schema] if dictionary_schema else [*{t.schema: 0 for t in reflected}, None]
                )
                dictionary = find_in_source(conn, dialect, schemas)
                if dictionary is None and dictionary_schema:
                    fail(f"no {SPECIFICATIONS_TABLE} in schema {dictionary_schema} of '{connection}'")
    except (Unreachable, IntrospectionError) as err:
        fail(str(err))
    names = _names(catalog, reflected, table_name)
    entries = [
        scaffold(t, name=n, connection=connection, dictionary=dictionary)
        for t, n in zip(reflected, names, strict=True)
    ]
    text = path.read_text(encoding="utf-8")
    try:
        updated = append_items(text, lambda indent: "".join(e.text(indent) for e in entries))
    except CatalogError as err:
        fail(f"{path}: {err}")
    _check_loads(path, updated)
    if write:
        path.write_text(updated, encoding="utf-8")
        added = ", ".join(e.name for e in entries)
        click.echo(f"{path}: added {added}")
    else:
        click.echo("".join(e.text(item_indent(text)) for e in entries), nl=False)
    _note(entries, dictionary)


def _source(catalog: Catalog, connection: str) -> SqlDatabase:
    if connection not in catalog.connections:
        fail(f"unknown connection '{connection}' (the catalog has: {', '.join(sorted(catalog.connections))})")
    if connection == catalog.cache:
        fail(f"connection '{connection}' is the cache; tables come from the other connections")
    resource = resources_for(catalog)[connection]
    if not isinstance(resource, SqlDatabase):
        fail(f"connection '{connection}' is not a database: add-table reads a database's schema")
    return resource


def _names(catalog: Catalog, tables: list[ReflectedTable], chosen: str | None) -> list[str]:
    """Each table's catalog name: unique, and refused when the catalog already has it."""
    if chosen is not None and len(tables) != 1:
        fail(f"--name names one table; {len(tables)} match: {', '.join(t.where for t in tables)}")
    if chosen is not None and not is_identifier(chosen):
        fail(
            f"--name '{chosen}' is not a valid table name (letters, digits and _, not starting with a digit)"
        )
    names: list[str] = []
    for table in tables:
        name = chosen or snake_case(table.name) or "table"
        if not name[0].isalpha() and name[0] != "_":
            name = f"t_{name}"
        if name.lower() in {n.lower() for n in names} and table.schema:
            name = f"{snake_case(table.schema)}_{name}"
        names.append(name)
    taken = {t.name.lower(): (i, t) for i, t in enumerate(catalog.tables)}
    taken.update(
        {t.target.lower(): (i, t) for i, t in enumerate(catalog.tables) if t.target.lower() not in taken}
    )
    clashes = []
    for name, table in zip(names, tables, strict=True):
        if name.lower() in taken:
            i, existing = taken[name.lower()]
            clashes.append(
                f"table '{name}' ({table.where}) is already in the catalog: tables[{i}] '{existing.name}'"
            )
    if len({n.lower() for n in names}) != len(names):
        clashes.append(
            f"two of the tables would both be named {sorted(n for n in names if names.count(n) > 1)[0]}"
        )
    if clashes:
        fail("; ".join(clashes) + "; give another --name, or remove the existing entry first")
    return names


def _check_loads(path: Path, text: str) -> None:
    """The catalog with the new entries must load: checked on a copy before anything is shown or
    written."""
    handle, copy = tempfile.mkstemp(prefix=f"{path.stem}.", suffix=path.suffix or ".yaml")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        load_catalog(copy)
    except CatalogError as err:
        fail(f"the scaffolded entries do not load (please report this): {str(err).replace(copy, str(path))}")
    finally:
        Path(copy).unlink(missing_ok=True)


def _note(entries: list[Entry], dictionary: Dictionary | None) -> None:
    """What a person must know besides the YAML, on stderr (stdout stays YAML)."""
    if dictionary is not None and any(jde_prefix(e.table) for e in entries):
        click.echo(f"JDE data dictionary: {dictionary.origin} ({len(dictionary.items)} data items)", err=True)
    for entry in entries:
        if entry.todo:
            click.echo(f"{entry.name}: written commented out: {entry.todo}", err=True)
