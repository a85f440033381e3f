"""The asset factory: one asset per catalog table, partitioned by update type when it has a watermark."""

import json
import traceback
from collections.abc import Generator, Iterator, Sequence

import dagster as dg

from sync_assets.assets.alerts import (
    ALERTER_KEY,
    CANCELLED_METADATA,
    build_check_alert_sensor,
    build_failure_alert_sensor,
)
from sync_assets.assets.executor import build_executor
from sync_assets.assets.freshness import Staleness, build_freshness_sensor, schedule_states, stalenesses
from sync_assets.assets.metadata import result_metadata
from sync_assets.assets.partitions import partitions_for
from sync_assets.assets.schedules import build_schedules
from sync_assets.assets.translator import SyncAssetTranslator
from sync_assets.catalog.files import FilesConnectionSpec
from sync_assets.catalog.models import Catalog, ConnectionSpec, TableSpec, UpdateType
from sync_assets.catalog.operations import Retries
from sync_assets.catalog.rest import RestConnectionSpec
from sync_assets.checks import CheckResources, TableCheck, sharing, table_checks
from sync_assets.errors import SyncCancelled, SyncError, SyncTransientError
from sync_assets.redact import redact
from sync_assets.resources.alerts import Alerter
from sync_assets.resources.database import Engines, SqlDatabase
from sync_assets.resources.files import FileDrop
from sync_assets.resources.rest import RestApi
from sync_assets.sources.sql import SqlTable
from sync_assets.sync.runner import FULL, run_sync

SOURCE_TAG = "sync_assets/source"


def pool_name(table: TableSpec) -> str:
    """One pool per target table: with the instance's default limit of 1, never two syncs at once."""
    return f"sync/{table.target}"


def build_table_asset(
    catalog: Catalog,
    table: TableSpec,
    translator: SyncAssetTranslator | None = None,
    staleness: Sequence[Staleness] | None = None,
) -> dg.AssetsDefinition:
    """The table's sync and all its checks in one op: one step process per table and run.

    The checks run right after the sync, in the same process; selected alone (the UI's "Execute
    checks"), they run without a sync. `staleness`: the table's staleness checks, when the caller
    built every table's at once (`stalenesses`).
    """
    translator = translator or SyncAssetTranslator()
    spec = translator.get_asset_spec(table, catalog)
    if staleness is None:
        keys = {t.name: translator.get_asset_key(t) for t in catalog.tables}
        staleness = stalenesses(catalog, keys)[table.name]
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
        engines = Engines()  # the sync's, kept for the checks after it
        try:
            reflected = None
            if spec.key in context.selected_asset_keys:
                reflected = yield from _materialize(
                    context, catalog, table, _update_type(context, table), spec.key, resources, engines
                )
            selected = context.selected_asset_check_keys
            wanted = [item for item in staleness if item.spec.key in selected]
            if wanted:
                origin = context.run.remote_job_origin
                schedules = schedule_states(
                    context.instance,
                    location=origin.location_name if origin else None,
                    repository=origin.repository_origin.repository_name if origin else None,
                )
                for item in wanted:
                    yield item.evaluate(context.instance, schedules=schedules)
            chosen = [check for check in verification if check.spec.key in selected]
            if chosen:
                with sharing(resources, source_table=reflected, engines=engines) as shared:
                    for check in chosen:
                        yield _evaluate(check, shared, context.log)
        except BaseException as err:
            if isinstance(err, Exception | GeneratorExit):  # GeneratorExit: Dagster closing this op
                raise
            raise _cancelled(table, err) from None
        finally:
            engines.close()

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
    return dg.Failure(description=description, allow_retries=False, metadata={CANCELLED_METADATA: True})


def _evaluate(check: TableCheck, resources: CheckResources, log: dg.DagsterLogManager) -> dg.AssetCheckResult:
    """A check that cannot run (database unreachable) warns; it must not hide the others. Nor
    may a check's own defect fail the step: the step's retries would run the sync again."""
    try:
        return check.evaluate(resources)
    except dg.Failure as failure:
        description = str(failure.description)
    except Exception as err:
        secrets = resources.cache.secrets() + resources.source.secrets()
        description = redact(f"{type(err).__name__}: {err}", secrets)
        log.error(redact(traceback.format_exc(), secrets))
    return dg.AssetCheckResult(
        asset_key=check.spec.asset_key,
        check_name=check.spec.name,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"could not run: {description}",
    )


def run_is_alive(instance: dg.DagsterInstance, run_id: str) -> bool:
    """A run this instance does not know is assumed alive: a source's slots err on the safe side."""
    run = instance.get_run_by_id(run_id)
    return run is None or not run.is_finished


def _update_type(context: dg.AssetExecutionContext, table: TableSpec) -> UpdateType:
    """The run's update type for this table.

    A table without `updated_at` has no partitions: a full reload (mass) is its only sync, also in
    a daily or hourly run that selects it with other tables (sitting out would make Dagster skip
    the tables that depend on it in that run).
    """
    if partitions_for(table) is not None:
        return UpdateType(context.partition_key)
    if context.has_partition_key and context.partition_key != UpdateType.MASS.value:
        context.log.info(
            "%s has no `updated_at`, so this %s run reloads it in full (mass)",
            table.name,
            context.partition_key,
        )
    return UpdateType.MASS


def _materialize(
    context: dg.AssetExecutionContext,
    catalog: Catalog,
    table: TableSpec,
    update_type: UpdateType,
    key: dg.AssetKey,
    resources: CheckResources,
    engines: Engines,
) -> Generator[dg.MaterializeResult | dg.AssetMaterialization, None, SqlTable | None]:
    """The sync, its result, and for a full load the other update types it brought up to date;
    returns the source table as the sync reflected it, for the checks that follow.

    A full load replaces every row, and the next incremental starts from its watermark, so each
    update-type partition of the table is current after it: recording them keeps Dagster from
    calling a table's daily "missing" (the launch dialog's "Upstream data missing" for tables
    that depend on it) when a mass just loaded it.
    """
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
            is_run_alive=lambda run_id: run_is_alive(context.instance, run_id),
            engines=engines,
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
        "%s: %s sync done, %d rows read, %d inserted, %d updated, %d unchanged, %d deleted in %.2f s",
        table.name,
        result.mode,
        result.rows_read,
        result.rows_inserted,
        result.rows_updated,
        result.rows_unchanged,
        result.rows_deleted,
        result.seconds,
    )
    yield dg.MaterializeResult(asset_key=key, metadata=result_metadata(result, table.column_descriptions))
    if result.mode == FULL and partitions_for(table) is not None:
        for other in UpdateType:
            if other is not update_type:
                yield dg.AssetMaterialization(
                    asset_key=key,
                    partition=other.value,
                    description=f"brought up to date by the full load of this {update_type.value} sync",
                    metadata={"dagster/row_count": dg.MetadataValue.int(result.row_count)},
                )
    return result.source_table


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


def resources_for(catalog: Catalog) -> dict[str, SqlDatabase | RestApi | FileDrop]:
    """One resource per connection, holding only ${VAR} templates: nothing secret reaches the UI."""
    return {name: _resource(name, conn) for name, conn in catalog.connections.items()}


def _resource(
    name: str, conn: ConnectionSpec | RestConnectionSpec | FilesConnectionSpec
) -> SqlDatabase | RestApi | FileDrop:
    if isinstance(conn, RestConnectionSpec):
        return RestApi(name=name, connection=conn.model_dump_json(by_alias=True))
    if isinstance(conn, FilesConnectionSpec):
        return FileDrop(
            name=name, path=conn.path, url=conn.url, storage_options=json.dumps(conn.storage_options)
        )
    return SqlDatabase(
        name=name,
        url=conn.url,
        password=conn.password,
        demo=conn.demo,
        connect_timeout=conn.connect_timeout.total_seconds(),
        keepalive=conn.keepalive.total_seconds(),
        arrow_odbc=conn.arrow_odbc,
    )


def build_definitions(catalog: Catalog, translator: SyncAssetTranslator | None = None) -> dg.Definitions:
    """Assets, schedules, checks, sensors and resources for one catalog."""
    translator = translator or SyncAssetTranslator()
    keys = {table.name: translator.get_asset_key(table) for table in catalog.tables}
    staleness = stalenesses(catalog, keys)
    assets = [build_table_asset(catalog, t, translator, staleness[t.name]) for t in catalog.tables]
    check_keys = [key for asset in assets for key in asset.check_keys]
    partitioned = {keys[t.name]: partitions_for(t) is not None for t in catalog.tables}
    return dg.Definitions(
        assets=assets,
        resources={**resources_for(catalog), ALERTER_KEY: Alerter(webhook_url=catalog.alerts.webhook_url)},
        schedules=build_schedules(catalog, keys),
        sensors=[
            build_freshness_sensor([item for items in staleness.values() for item in items]),
            build_failure_alert_sensor(partitioned),
            build_check_alert_sensor(check_keys),
        ],
        executor=executor_for(catalog),
    )


def executor_for(catalog: Catalog) -> dg.ExecutorDefinition:
    """Tables run in parallel, but never more than a connection's `max_parallel` of one source."""
    return build_executor(
        [
            {"key": SOURCE_TAG, "value": name, "limit": conn.max_parallel}
            for name, conn in catalog.connections.items()
            if conn.max_parallel
        ],
        single_step_in_process=catalog.execution.single_table_in_process,
    )
