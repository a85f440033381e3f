"""sync_assets: Dagster assets that keep a local cache database in sync with legacy sources."""

from sync_assets.assets.factory import build_definitions, build_table_asset
from sync_assets.assets.translator import SyncAssetTranslator
from sync_assets.catalog.loader import load_catalog
from sync_assets.component import SyncCatalog
from sync_assets.resources.database import SqlDatabase

__all__ = [
    "SqlDatabase",
    "SyncAssetTranslator",
    "SyncCatalog",
    "build_definitions",
    "build_table_asset",
    "load_catalog",
]
