"""`sync-assets status`: each table and update type's state, from sync_log and the Dagster instance."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import dagster as dg

from sync_assets.assets.factory import resources_for, run_is_alive
from sync_assets.assets.freshness import (
    ScheduleState,
    Staleness,
    latest_evaluations,
    schedule_states,
    stalenesses,
)
from sync_assets.assets.translator import SyncAssetTranslator
from sync_assets.catalog.models import Catalog, TableSpec
from sync_assets.checks import CheckResources, table_checks
from sync_assets.checks.lag import lag_checks
from sync_assets.cli import report
from sync_assets.cli.context import (
    Unreachable,
    catalog_option,
    connected,
    dagster_instance,
    load,
    missing,
    not_created_yet,
    table_named,
)
from sync_assets.cli.states import FailingCheck, Lag, Status, status_of
from sync_assets.resources.database import SqlDatabase
from sync_assets.resources.files import FileDrop
from sync_assets.resources.rest import RestApi
from sync_assets.sync.history import History, read_history

WITHOUT_INSTANCE = (
    "schedules, staleness and check results are not shown; each state comes from sync_log alone "
    "(ok: its latest attempt succeeded)"
)
USAGE_ERROR = 2  # the catalog or a table name is wrong: nothing could be looked at


@click.command()
@click.argument("tables", nargs=-1)
@catalog_option
@click.option(
    "--json", "as_json", is_flag=True, help="A JSON list of objects, one per table and update type."
)
@click.option(
    "--lag", is_flag=True, help="Also connect to each source: how far the cache's newest row trails it."
)
def status(tables: tuple[str, ...], catalog_file: Path | None, as_json: bool, lag: bool) -> None:
    """The state of every table (or of TABLES) and update type.

    Exits 1 when the latest attempt of one failed, one whose schedule runs is stale, or a database
    could not be reached; 0 otherwise; 2 when the catalog or a table name is wrong.
    """
    _, catalog = load(catalog_file, exit_code=USAGE_ERROR)
    chosen = [table_named(catalog, name, exit_code=USAGE_ERROR) for name in tables] or list(catalog.tables)
    now = datetime.now(UTC)

    def note(text: str) -> None:
        click.echo(text, err=True)

    with dagster_instance(without=WITHOUT_INSTANCE, note=note) as instance:
        found = statuses(catalog, chosen, instance, now=now, lag=lag, note=note)
    click.echo(report.as_json(found) if as_json else report.as_text(found, now=now, lag=lag))
    click.get_current_context().exit(1 if any(s.alarming for s in found) else 0)


def statuses(
    catalog: Catalog,
    tables: Sequence[TableSpec],
    instance: dg.DagsterInstance | None,
    *,
    now: datetime,
    lag: bool,
    note: Callable[[str], Any],
) -> list[Status]:
    """One Status per table and update type, in catalog order."""
    translator = SyncAssetTranslator()
    keys = {t.name: translator.get_asset_key(t) for t in catalog.tables}
    staleness = stalenesses(catalog, keys)
    resources = resources_for(catalog)
    histories, cache_problem = _histories(tables, resources[catalog.cache], instance, note)
    schedules, checks = _from_instance(catalog, tables, instance, keys, staleness, note)
    lags: dict[str, Lag | str] = {}
    if lag and cache_problem is None:
        lags = {t.name: found for t in tables if (found := _lag(catalog, t, keys[t.name], resources))}
    found = []
    for table in tables:
        by_type = {item.update_type: item for item in staleness[table.name]}
        table_lag = lags.get(table.name)
        for update_type in table.update_types:
            history = (
                histories.get((table.name, update_type.value), History()) if cache_problem is None else None
            )
            item = status_of(
                table.name,
                update_type,
                history,
                staleness=by_type.get(update_type),
                schedules=schedules,
                now=now,
                unreachable=cache_problem or (table_lag if isinstance(table_lag, str) else None),
            )
            found.append(
                dataclasses.replace(
                    item,
                    failing_checks=checks.get(table.name) if checks is not None else None,
                    lag=table_lag if isinstance(table_lag, Lag) else None,
                )
            )
    return found


def _histories(
    tables: Sequence[TableSpec],
    cache: SqlDatabase,
    instance: dg.DagsterInstance | None,
    note: Callable[[str], Any],
) -> tuple[dict[tuple[str, str], History], str | None]:
    """sync_log's account of the tables, or why the cache could not be read.

    A cache file that does not exist yet is a cache nothing has synced into: every table is
    `never`, not failed (a fresh deployment raises no alarm).
    """
    if (unsynced := not_created_yet(cache)) is not None:
        note(f"{unsynced} yet: no table has synced")
        return {}, None
    wanted = [(t.name, u.value) for t in tables for u in t.update_types]
    # Without an instance, a sync another machine runs is taken as alive, as a new sync would.
    is_run_alive = functools.partial(run_is_alive, instance) if instance else None
    try:
        with connected(cache, role="cache") as (conn, _):
            return read_history(conn, wanted, is_run_alive=is_run_alive), None
    except Unreachable as err:
        return {}, str(err)


def _from_instance(
    catalog: Catalog,
    tables: Sequence[TableSpec],
    instance: dg.DagsterInstance | None,
    keys: dict[str, dg.AssetKey],
    staleness: dict[str, list[Staleness]],
    note: Callable[[str], Any],
) -> tuple[dict[str, ScheduleState] | None, dict[str, tuple[FailingCheck, ...]] | None]:
    """Running schedules, and each table's failing checks (their latest recorded evaluations)."""
    if instance is None:
        return None, None
    check_keys = {
        t.name: [item.check_key for item in staleness[t.name]]
        + [check.spec.key for check in table_checks(catalog, t, keys[t.name])]
        for t in tables
    }
    try:
        schedules = schedule_states(instance)
        evaluations = latest_evaluations(instance, [key for found in check_keys.values() for key in found])
    except Exception as err:  # its storage is another system (dagster-postgres raises plain Exceptions)
        note(f"the Dagster instance could not be read ({type(err).__name__}): {WITHOUT_INSTANCE}")
        return None, None
    failing = {
        table: tuple(
            FailingCheck(key.name, evaluation.severity.value, evaluation.description)
            for key in sorted(found, key=lambda k: k.name)
            if (evaluation := evaluations.get(key)) is not None and not evaluation.passed
        )
        for table, found in check_keys.items()
    }
    return schedules, failing


def _lag(
    catalog: Catalog,
    table: TableSpec,
    key: dg.AssetKey,
    resources: Mapping[str, SqlDatabase | RestApi | FileDrop],
) -> Lag | str | None:
    """The `source_lag` check run here and now, or why it could not run; None for a mass-only table."""
    sql = table.endpoint is None and table.files is None
    checks = lag_checks(catalog, table, key) if sql else []  # an API or files: no query for it
    if not checks:
        return None
    source, cache = resources[table.source], resources[catalog.cache]
    assert isinstance(source, SqlDatabase)
    if reason := missing(source, role="source"):
        return reason
    try:
        result = checks[0].evaluate(CheckResources(source=source, cache=cache))
    except dg.Failure as failure:
        return f"source lag: {failure.description}"
    metadata = {name: getattr(value, "value", value) for name, value in result.metadata.items()}
    return Lag(
        seconds=metadata.get("lag_seconds"),
        source_max=metadata.get("source_max"),
        cache_max=metadata.get("cache_max"),
        passed=result.passed,
        description=result.description,
    )
