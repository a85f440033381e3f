"""The asset factory: one asset per catalog table, partitioned by update type."""

import multiprocessing
from collections.abc import Iterator
from typing import Any

import dagster as dg

from sync_assets.assets.alerts import ALERTER_KEY, sync_check_alerts, sync_failure_alerts
from sync_assets.assets.freshness import build_freshness_sensor, stalenesses
from sync_assets.assets.metadata import result_metadata
from sync_assets.assets.schedules import build_schedules
from sync_assets.assets.translator import SyncAssetTranslator
from sync_assets.catalog.models import Catalog, TableSpec, UpdateType
from sync_assets.catalog.operations import Retries
from sync_assets.checks import CheckResources, TableCheck, table_checks
from sync_assets.errors import SyncCancelled, SyncError, SyncTransientError
from sync_assets.resources.alerts import Alerter
from sync_assets.resources.database import SqlDatabase
from sync_assets.sync.runner import run_sync

SYNC_ALL_JOB = "sync_all_tables"
CODE_LOCATION = "sync_assets.definitions"
FORKSERVER_PRELOAD = "sync_assets.assets.forkserver"
SOURCE_TAG = "sync_assets/source"


def pool_name(table: TableSpec) -> str:
    """One pool per target table: with the instance's default limit of 1, never two syncs at once."""
    return f"sync/{table.target}"


def build_table_asset(
    catalog: Catalog,
    table: TableSpec,
    translator: SyncAssetTranslator | None = None,
) -> dg.AssetsDefinition:
    """The table's sync and all its checks in one op: one step process per table and run.

    The checks run right after the sync, in the same process; selected alone (the UI's "Execute
    checks"), they run without a sync.
    """
    translator = translator or SyncAssetTranslator()
    spec = translator.get_asset_spec(table, catalog)
    staleness = stalenesses(catalog, table, spec.key)
    verification = table_checks(catalog, table, spec.key)
    check_specs = [s.spec for s in staleness] + [c.spec for c in verification]

    @dg.multi_asset(
        name=spec.key.to_python_identifier(),
        specs=[spec],
        check_specs=check_specs,
        can_subset=True,
        required_resource_keys={table.source, catalog.cache},
        pool=pool_name(table),
        retry_policy=retry_policy(catalog.connections[table.source].retries),
        op_tags={SOURCE_TAG: table.source},
    )
    def _sync(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        resources = CheckResources(
            source=getattr(context.resources, table.source), cache=getattr(context.resources, catalog.cache)
        )
        try:
            if spec.key in context.selected_asset_keys:
                yield _materialize(context, catalog, table, spec.key, resources)
            selected = context.selected_asset_check_keys
            for item in staleness:
                if item.spec.key in selected:
                    yield item.evaluate(context.instance)
            for check in verification:
                if check.spec.key in selected:
                    yield _evaluate(check, resources)
        except BaseException as err:
            if isinstance(err, Exception | GeneratorExit):  # GeneratorExit: Dagster closing this op
                raise
            raise _cancelled(table, err) from None

    return _sync


def _cancelled(table: TableSpec, interrupt: BaseException) -> dg.Failure:
    """A terminated run or Ctrl-C as a failure that is never retried.

    Dagster turns an interrupt inside an op with a RetryPolicy into a retry request
    (op_execution_error_boundary), which showed a terminated run as STEP_UP_FOR_RETRY. The run
    still ends CANCELED when it was terminated: the executor re-raises the interrupt itself.
    """
    description = (
        str(interrupt) if isinstance(interrupt, SyncCancelled) else f"table '{table.name}': cancelled"
    )
    return dg.Failure(description=description, allow_retries=False)


def _evaluate(check: TableCheck, resources: CheckResources) -> dg.AssetCheckResult:
    """A check that cannot run (database unreachable) warns; it must not hide the others."""
    try:
        return check.evaluate(resources)
    except dg.Failure as failure:
        return dg.AssetCheckResult(
            asset_key=check.spec.asset_key,
            check_name=check.spec.name,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"could not run: {failure.description}",
        )


def _run_alive(instance: dg.DagsterInstance, run_id: str) -> bool:
    """A run this instance does not know is assumed alive: a source's slots err on the safe side."""
    run = instance.get_run_by_id(run_id)
    return run is None or not run.is_finished


def _materialize(
    context: dg.AssetExecutionContext,
    catalog: Catalog,
    table: TableSpec,
    key: dg.AssetKey,
    resources: CheckResources,
) -> dg.MaterializeResult:
    update_type = UpdateType(context.partition_key)
    context.log.info("Syncing %s (%s) into %s", table.name, update_type.value, table.target)
    try:
        result = run_sync(
            catalog,
            table,
            update_type,
            source_db=resources.source,
            cache_db=resources.cache,
            run_id=context.run.run_id,
            log=context.log.info,
            is_run_alive=lambda run_id: _run_alive(context.instance, run_id),
        )
    except SyncTransientError as err:
        max_retries = catalog.connections[table.source].retries.max_retries  # what retry_policy() was given
        attempt = context.retry_number + 1
        if context.retry_number < max_retries:
            context.log.warning(
                "%s (attempt %d of %d): transient, will be retried: %s",
                table.name,
                attempt,
                max_retries + 1,
                err,
            )
        else:
            context.log.warning(
                "%s (attempt %d): transient, not retried (max_retries: %d): %s",
                table.name,
                attempt,
                max_retries,
                err,
            )
        raise dg.Failure(description=str(err), allow_retries=True) from None
    except SyncError as err:
        raise dg.Failure(description=str(err), allow_retries=False) from None
    context.log.info(
        "%s: %s sync done, %d rows read, %d inserted, %d updated in %.2f s",
        table.name,
        result.mode,
        result.rows_read,
        result.rows_inserted,
        result.rows_updated,
        result.seconds,
    )
    return dg.MaterializeResult(asset_key=key, metadata=result_metadata(result))


def retry_policy(retries: Retries) -> dg.RetryPolicy | None:
    """Dagster's retry policy for transient errors of one source; permanent errors skip it."""
    if retries.max_retries == 0:
        return None
    return dg.RetryPolicy(
        max_retries=retries.max_retries,
        delay=retries.delay.total_seconds(),
        backoff=dg.Backoff.EXPONENTIAL if retries.backoff == "exponential" else dg.Backoff.LINEAR,
        jitter=dg.Jitter.PLUS_MINUS if retries.jitter else None,
    )


def resources_for(catalog: Catalog) -> dict[str, SqlDatabase]:
    """One resource per connection, holding only ${VAR} templates: nothing secret reaches the UI."""
    return {
        name: SqlDatabase(
            name=name,
            url=conn.url,
            password=conn.password,
            demo=conn.demo,
            connect_timeout=conn.connect_timeout.total_seconds(),
            keepalive=conn.keepalive.total_seconds(),
        )
        for name, conn in catalog.connections.items()
    }


def build_definitions(catalog: Catalog, translator: SyncAssetTranslator | None = None) -> dg.Definitions:
    """Assets, schedules, checks, sensors and resources for one catalog."""
    translator = translator or SyncAssetTranslator()
    assets = [build_table_asset(catalog, table, translator) for table in catalog.tables]
    keys = {table.name: translator.get_asset_key(table) for table in catalog.tables}
    sync_all = dg.define_asset_job(SYNC_ALL_JOB, selection=dg.AssetSelection.assets(*assets))
    schedules, schedule_jobs = build_schedules(catalog, keys)
    staleness = [item for t in catalog.tables for item in stalenesses(catalog, t, keys[t.name])]
    return dg.Definitions(
        assets=assets,
        resources={**resources_for(catalog), ALERTER_KEY: Alerter(webhook_url=catalog.alerts.webhook_url)},
        jobs=[sync_all, *schedule_jobs],
        schedules=schedules,
        sensors=[build_freshness_sensor(staleness), sync_failure_alerts, sync_check_alerts],
        executor=executor_for(catalog),
    )


def executor_for(catalog: Catalog) -> dg.ExecutorDefinition:
    """Tables run in parallel, but never more than a connection's `max_parallel` of one source."""
    limits = [
        {"key": SOURCE_TAG, "value": name, "limit": conn.max_parallel}
        for name, conn in catalog.connections.items()
        if conn.max_parallel
    ]
    config: dict[str, Any] = {"tag_concurrency_limits": limits}
    if "forkserver" in multiprocessing.get_all_start_methods():  # not on Windows
        # Step processes fork from a server that imported the code location once, instead of each
        # spawning an interpreter that builds every table's definitions again: 500 tables, 10 of
        # them in one run, took 1.37 s per further table instead of 1.89 s (bench/overhead.py).
        # The code location is imported once, in the server; the second module makes it ignore SIGTERM.
        config["start_method"] = {"forkserver": {"preload_modules": [CODE_LOCATION, FORKSERVER_PRELOAD]}}
    return dg.multiprocess_executor.configured(config)
