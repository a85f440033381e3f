"""The asset factory: one asset per catalog table, partitioned by update type."""

import dagster as dg

from sync_assets.assets.metadata import result_metadata
from sync_assets.assets.translator import SyncAssetTranslator
from sync_assets.catalog.models import Catalog, TableSpec, UpdateType
from sync_assets.errors import SyncError
from sync_assets.resources.database import SqlDatabase
from sync_assets.sync.runner import run_sync

SYNC_ALL_JOB = "sync_all_tables"


def pool_name(table: TableSpec) -> str:
    """One pool per target table: with the instance's default limit of 1, never two syncs at once."""
    return f"sync/{table.target}"


def build_table_asset(
    catalog: Catalog, table: TableSpec, translator: SyncAssetTranslator | None = None
) -> dg.AssetsDefinition:
    spec = (translator or SyncAssetTranslator()).get_asset_spec(table, catalog)

    @dg.multi_asset(
        name=spec.key.to_python_identifier(),
        specs=[spec],
        required_resource_keys={table.source, catalog.cache},
        pool=pool_name(table),
    )
    def _sync(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        update_type = UpdateType(context.partition_key)
        source_db: SqlDatabase = getattr(context.resources, table.source)
        cache_db: SqlDatabase = getattr(context.resources, catalog.cache)
        context.log.info("Syncing %s (%s) into %s", table.name, update_type.value, table.target)
        try:
            result = run_sync(
                catalog,
                table,
                update_type,
                source_db=source_db,
                cache_db=cache_db,
                run_id=context.run.run_id,
                log=context.log.info,
            )
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
        return dg.MaterializeResult(asset_key=spec.key, metadata=result_metadata(result))

    return _sync


def resources_for(catalog: Catalog) -> dict[str, SqlDatabase]:
    """One resource per connection, holding only ${VAR} templates: nothing secret reaches the UI."""
    return {
        name: SqlDatabase(name=name, url=conn.url, password=conn.password, demo=conn.demo)
        for name, conn in catalog.connections.items()
    }


def build_definitions(catalog: Catalog, translator: SyncAssetTranslator | None = None) -> dg.Definitions:
    """Assets, resources and the job that syncs every table, for one catalog."""
    assets = [build_table_asset(catalog, table, translator) for table in catalog.tables]
    sync_all = dg.define_asset_job(SYNC_ALL_JOB, selection=dg.AssetSelection.assets(*assets))
    return dg.Definitions(assets=assets, resources=resources_for(catalog), jobs=[sync_all])
