"""The asset checks of a catalog table: validation rules, source/cache reconciliation, data lag."""

from __future__ import annotations

import dagster as dg

from sync_assets.catalog.models import Catalog, TableSpec
from sync_assets.checks.lag import build_lag_checks
from sync_assets.checks.reconcile import build_reconciliation_checks
from sync_assets.checks.validation import build_validation_checks


def build_table_checks(
    catalog: Catalog, table: TableSpec, asset_key: dg.AssetKey
) -> list[dg.AssetChecksDefinition]:
    """Every asset check of one catalog table.

    Args:
        catalog: the catalog, for the cache connection and the defaults.
        table: the table whose checks to build.
        asset_key: the key of the table's asset.

    Raises:
        ValueError: a validation rule is named like a built-in check of the table.
    """
    checks = [
        *build_validation_checks(catalog, table, asset_key),
        *build_reconciliation_checks(catalog, table, asset_key),
        *build_lag_checks(catalog, table, asset_key),
    ]
    _refuse_duplicate_names(table, checks)
    return checks


def _refuse_duplicate_names(table: TableSpec, checks: list[dg.AssetChecksDefinition]) -> None:
    seen: set[str] = set()
    for check in checks:
        for spec in check.check_specs:
            if spec.name in seen:
                msg = f"table '{table.name}': two checks are named '{spec.name}'; rename the validation rule"
                raise ValueError(msg)
            seen.add(spec.name)
