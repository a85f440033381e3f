"""What the commands share: the --catalog option, the cache connection and DAGSTER_HOME's instance."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
import dagster as dg
import sqlalchemy as sa

from sync_assets.catalog.loader import CATALOG_ENV_VAR, catalog_path, load_catalog
from sync_assets.catalog.models import Catalog, TableSpec
from sync_assets.dialects import get_dialect
from sync_assets.dialects.base import DATABASE_ERRORS
from sync_assets.errors import CatalogError, SyncError, describe_error
from sync_assets.redact import redact
from sync_assets.resources.database import Role, SqlDatabase

catalog_option = click.option(
    "--catalog",
    "catalog_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"The table catalog (default: ${CATALOG_ENV_VAR}, else the bundled demo catalog).",
)


def fail(message: str, *, exit_code: int = 1) -> NoReturn:
    """End the command with `message` on stderr and `exit_code`, without a traceback."""
    error = click.ClickException(message)
    error.exit_code = exit_code
    raise error


def load(catalog_file: Path | None, *, exit_code: int = 1) -> tuple[Path, Catalog]:
    """The catalog the code location would load (or the one given), or the command ends with its errors."""
    path = catalog_file or catalog_path()
    try:
        return path, load_catalog(path)
    except CatalogError as err:
        fail(str(err), exit_code=exit_code)


def table_named(catalog: Catalog, name: str, *, exit_code: int = 1) -> TableSpec:
    if name not in {t.name for t in catalog.tables}:
        known = ", ".join(sorted(t.name for t in catalog.tables))
        fail(f"unknown table '{name}' (the catalog has: {known})", exit_code=exit_code)
    return catalog.table(name)


class Unreachable(Exception):
    """A database the command cannot use; the message names the connection, secrets masked."""


@contextmanager
def connected(database: SqlDatabase, *, role: Role) -> Iterator[tuple[sa.Connection, Any]]:
    """A connection to `database` for the block, closed afterwards (never committed here).

    Anything that keeps the block from running (an unset variable, a missing file, a refused
    connection, a failing statement) raises Unreachable; a missing file database is not created.
    """
    if reason := missing(database, role=role):
        raise Unreachable(reason)
    try:
        with database.engine(role=role) as (engine, dialect), engine.connect() as conn:
            yield conn, dialect
    except (SyncError, *DATABASE_ERRORS) as err:
        raise Unreachable(_named(database, role, err)) from None


def missing(database: SqlDatabase, *, role: Role) -> str | None:
    """Why `database` cannot be there, found without connecting: an unset variable, a missing file."""
    try:
        url = database.resolved_url()
    except SyncError as err:
        return _named(database, role, err)
    reason = get_dialect(url.get_backend_name()).missing_database(url)
    return f"{role} connection '{database.name}': {redact(reason, database.secrets())}" if reason else None


def not_created_yet(database: SqlDatabase) -> str | None:
    """Why a file database is absent ("... cache.sqlite does not exist"), if it is; None
    otherwise, also when its URL does not resolve (connecting says why)."""
    try:
        database.resolved_url()
    except SyncError:
        return None
    return missing(database, role="cache")


def _named(database: SqlDatabase, role: Role, err: Exception) -> str:
    text = redact(describe_error(err, phase=None), database.secrets())
    return text if f"connection '{database.name}'" in text else f"{role} connection '{database.name}': {text}"


@contextmanager
def dagster_instance(*, without: str, note: Callable[[str], Any]) -> Iterator[dg.DagsterInstance | None]:
    """DAGSTER_HOME's instance; None when there is none, said once through `note` with what is
    done `without` it."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        note(f"DAGSTER_HOME is not set: {without}")
        yield None
        return
    try:
        instance = dg.DagsterInstance.get()
    except Exception as err:  # its storage is another system (dagster-postgres raises plain Exceptions)
        kind = type(err).__name__
        note(f"the Dagster instance in DAGSTER_HOME={home} cannot be opened ({kind}): {without}")
        yield None
        return
    try:
        yield instance
    finally:
        instance.dispose()
