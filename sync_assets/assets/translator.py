"""How a catalog table appears in Dagster: the single override point for keys, groups, metadata."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import dagster as dg

from sync_assets.assets.partitions import partitions_for
from sync_assets.catalog.models import Catalog, TableSpec

METADATA_TABLE_SPEC = "sync_assets/table_spec"


@dataclass(frozen=True)
class SyncAssetTranslator:
    """Subclass and override `get_asset_spec` to change keys, groups, owners or tags."""

    def get_asset_key(self, table: TableSpec) -> dg.AssetKey:
        return dg.AssetKey([table.source, table.name])

    def get_asset_spec(self, table: TableSpec, catalog: Catalog) -> dg.AssetSpec:
        # Only a policy the catalog states: Dagster's freshness daemon counts time whether or not
        # a schedule runs, so a derived one would flag every table of a catalog whose schedules
        # are stopped. The per-update-type staleness checks follow the schedules instead.
        freshness = table.freshness or catalog.defaults.freshness
        schedules = table.schedules_for(catalog.defaults)
        return dg.AssetSpec(
            key=self.get_asset_key(table),
            deps=[self.get_asset_key(catalog.table(name)) for name in table.deps],
            freshness_policy=(
                dg.FreshnessPolicy.time_window(
                    fail_window=freshness.fail_after, warn_window=freshness.warn_after
                )
                if freshness
                else None
            ),
            group_name=table.source,
            description=table.description or _describe(table),
            partitions_def=partitions_for(table),
            code_version=code_version(table),
            kinds={"sql"},
            tags={"sync_assets/source": table.source},
            metadata={
                "dagster/table_name": table.target,
                "sync_assets/primary_key": ", ".join(table.primary_key),
                "sync_assets/updated_at": table.updated_at or "(none)",
                "sync_assets/change_detection": table.change_detection.value,
                "sync_assets/deletes": _deletes(table),
                "sync_assets/update_types": ", ".join(u.value for u in table.update_types),
                "sync_assets/schedules": ", ".join(
                    f"{u.value}: {s.cron} ({s.timezone})" for u, s in schedules.items()
                )
                or "(none)",
                METADATA_TABLE_SPEC: dg.MetadataValue.json(table.model_dump(mode="json", exclude_none=True)),
            },
        )


def code_version(table: TableSpec) -> str:
    """Changes whenever the table's catalog entry changes."""
    return hashlib.sha256(table.model_dump_json().encode()).hexdigest()[:16]


def _describe(table: TableSpec) -> str:
    where = (
        (table.query and "a query")
        or (table.endpoint and f"endpoint {table.endpoint}")
        or ".".join(p for p in (table.source_schema, table.source_table) if p)
    )
    if table.by_hash:
        watermark = "incremental by row hashes compared per key range"
    elif table.updated_at:
        watermark = f"incremental on `{table.updated_at}`"
    else:
        watermark = "full reloads only"
    if table.deletes is not None:
        watermark += f"; {_deletes(table)}"
    return f"Cache table `{table.target}` synced from {where} on `{table.source}`; {watermark}."


def _deletes(table: TableSpec) -> str:
    deletes = table.deletes
    if deletes is None:
        return "(not detected: rows deleted at the source stay until the next mass)"
    done = "deleted" if deletes.mode == "hard" else f"stamped in `{deletes.column}`"
    return f"source deletions {done} (at most {deletes.max_delete_ratio:.0%} of the table per sync)"
