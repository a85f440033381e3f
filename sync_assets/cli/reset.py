"""`sync-assets reset`: move where a table's next incremental starts, recorded in sync_log."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from sync_assets.assets.factory import resources_for, run_is_alive
from sync_assets.catalog.models import Catalog, TableSpec
from sync_assets.cli.context import (
    Unreachable,
    catalog_option,
    connected,
    dagster_instance,
    fail,
    load,
    table_named,
)
from sync_assets.errors import SyncError
from sync_assets.resources.rest import RestApi
from sync_assets.sources.rest import RestSource
from sync_assets.sources.sql import reflect
from sync_assets.sync import audit, watermark
from sync_assets.types import Kind

WITHOUT_INSTANCE = "a sync sync_log shows running on another machine is taken as still running"


@click.command()
@click.argument("table")
@catalog_option
@click.option("--to", "to", metavar="TIMESTAMP", help="ISO 8601, in the watermark column's own terms.")
@click.option("--full", is_flag=True, help="The next incremental loads the whole table.")
def reset(table: str, catalog_file: Path | None, to: str | None, full: bool) -> None:
    """Make TABLE's next daily or hourly sync read from TIMESTAMP exactly (no lookback), or load in full.

    Recorded as a sync_log row with status 'reset'; it holds until a sync succeeds after it.
    Refused while the table is being synced.
    """
    if (to is None) == (not full):
        msg = "give exactly one of --to TIMESTAMP or --full"
        raise click.UsageError(msg)
    _, catalog = load(catalog_file)
    spec = table_named(catalog, table)
    if spec.updated_at is None:
        fail(
            f"table '{table}' has no `updated_at` column: its only sync is the mass, which always loads "
            "in full, so there is no watermark to reset"
        )
    mark = None if to is None else watermark.encode(_watermark(catalog, spec, to))
    with dagster_instance(without=WITHOUT_INSTANCE, note=lambda text: click.echo(text, err=True)) as instance:
        try:
            with connected(resources_for(catalog)[catalog.cache], role="cache") as (conn, dialect):
                audit.ensure_table(conn.engine)
                # Taken as a sync takes its start, so no sync can start (or be running) meanwhile.
                with dialect.write_transaction(conn):
                    dialect.serialize_starts(conn)
                    recorded = audit.reset(
                        conn,
                        table=spec.name,
                        target=spec.target,
                        source=spec.source,
                        watermark=mark,
                        run_id=f"reset-{uuid.uuid4().hex}",
                        is_run_alive=functools.partial(run_is_alive, instance) if instance else None,
                    )
        except Unreachable as err:
            fail(str(err))
    if isinstance(recorded, audit.Busy):
        fail(f"{recorded.reason}; nothing was reset, try again once it has ended")
    what = "loads in full" if mark is None else f"reads from {mark} on, without the lookback"
    click.echo(f"{table}: the next daily or hourly sync {what} (sync_log id {recorded}, status 'reset')")


def _watermark(catalog: Catalog, spec: TableSpec, text: str) -> Any:
    """`--to` as a value of the table's watermark column, whose type the source says: a reset the
    next sync could not read would fail every incremental until another reset."""
    source = resources_for(catalog)[spec.source]
    try:
        if spec.files is not None:  # its increments are the files its manifest has not seen
            fail(f"table '{spec.name}' reads files: its incrementals follow its file manifest; use --full")
        if isinstance(source, RestApi):  # an API's watermark: as `schema:` types it, else a timestamp
            column = RestSource.declared_column(spec, str(spec.updated_at))
        else:
            with connected(source, role="source") as (conn, dialect):
                column = reflect(conn, spec, dialect).column(str(spec.updated_at))
    except Unreachable as err:
        fail(f"cannot check --to against the source's `{spec.updated_at}` column: {err}")
    except SyncError as err:  # the table or a column the catalog names is not in the source
        fail(str(err))
    kind = column.type.kind if column.type is not None else Kind.DATETIME  # a query's: its values decide
    try:
        if kind in (Kind.DATETIME, Kind.DATE):
            value = datetime.fromisoformat(text)
            return value.date() if kind is Kind.DATE else value
        parse = {Kind.INTEGER: int, Kind.DECIMAL: Decimal, Kind.FLOAT: float}.get(kind)
        if parse is None:
            fail(f"table '{spec.name}': a `{spec.updated_at}` watermark of {column.type} cannot be reset")
        return parse(text)
    except (ValueError, ArithmeticError):
        if kind in (Kind.DATETIME, Kind.DATE):
            fail(f"--to '{text}' is not an ISO 8601 timestamp (for example 2026-03-01 08:00:00)")
        fail(f"--to '{text}' is not a number, and `{spec.updated_at}` holds {kind.value} values")
