"""The checks of a catalog table: validation rules, source/cache reconciliation, data lag.

Each is a spec to declare on the table's asset op (`check_specs=`) and a function evaluating it
against the table's connection resources, so a sync and its checks run in one step.
"""

from __future__ import annotations

import dagster as dg

from sync_assets.catalog.models import Catalog, TableSpec
from sync_assets.checks.api_total import api_total_checks
from sync_assets.checks.common import CheckResources, TableCheck, sharing
from sync_assets.checks.lag import lag_checks
from sync_assets.checks.reconcile import reconciliation_checks
from sync_assets.checks.validation import validation_checks

__all__ = ["CheckResources", "TableCheck", "sharing", "table_checks"]


def table_checks(catalog: Catalog, table: TableSpec, asset_key: dg.AssetKey) -> list[TableCheck]:
    """Every verification/validation check of one table, in a stable order.

    The validation rules in catalog order, then, for a table of a source database,
    reconciliation, deep_reconciliation (when asked for) and source_lag (when the table has
    `updated_at`).

    Args:
        catalog: the catalog, for the defaults.
        table: the table whose checks to build.
        asset_key: the key of the table's asset.

    Raises:
        ValueError: a validation rule is named like a built-in check of the table.
    """
    checks = validation_checks(table, asset_key)
    if table.endpoint is None and table.files is None:  # these query the source database
        checks += [*reconciliation_checks(catalog, table, asset_key), *lag_checks(catalog, table, asset_key)]
    else:  # an API's reported record count, where it reports one; files have no such count
        checks += api_total_checks(table, asset_key)
    _refuse_duplicate_names(table, checks)
    return checks


def _refuse_duplicate_names(table: TableSpec, checks: list[TableCheck]) -> None:
    seen: set[str] = set()
    for name in (check.spec.name for check in checks):
        if name in seen:
            msg = f"table '{table.name}': two checks are named '{name}'; rename the validation rule"
            raise ValueError(msg)
        seen.add(name)
