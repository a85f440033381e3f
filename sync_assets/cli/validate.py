"""`sync-assets validate`: what the code location would refuse when it loads, without Dagster running."""

from __future__ import annotations

from pathlib import Path

import click
import dagster as dg

from sync_assets.assets.factory import build_definitions
from sync_assets.assets.schedules import schedule_groups
from sync_assets.cli.context import catalog_option, fail, load


@click.command()
@catalog_option
def validate(catalog_file: Path | None) -> None:
    """Check the catalog (file:line errors) and build its Dagster definitions, in-process.

    Needs no database and no secret: placeholders stay unresolved, as when the code location
    loads. Exits 0 with a summary, 1 with every error found.
    """
    path, catalog = load(catalog_file)
    try:
        dg.Definitions.validate_loadable(build_definitions(catalog))
    except Exception as err:  # whatever Dagster refuses, the code location would refuse too
        fail(f"{path}: the catalog loads, but its definitions do not build: {type(err).__name__}: {err}")
    tables, connections, schedules = (
        len(catalog.tables),
        len(catalog.connections),
        len(schedule_groups(catalog)),
    )
    click.echo(
        f"{path}: ok, {_count(tables, 'table')}, {_count(connections, 'connection')}, "
        f"{_count(schedules, 'schedule')}"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
