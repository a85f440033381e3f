"""The update-type partitions of table assets.

A table with an `updated_at` watermark (or `change_detection: hash`) offers all three update
types. A table without either can only be reloaded in full, so its asset has no partitions at
all: the UI then offers a plain Materialize (its mass) instead of two partitions that could only
fail, and Dagster still runs it beside partitioned tables in one run (it refuses runs over two
different partition sets).
"""

from __future__ import annotations

import dagster as dg

from sync_assets.catalog.models import TableSpec, UpdateType

UPDATE_TYPE_PARTITIONS = dg.StaticPartitionsDefinition([u.value for u in UpdateType])


def partitions_for(table: TableSpec) -> dg.StaticPartitionsDefinition | None:
    """The table's partitions: every update type, or none for a mass-only table."""
    return UPDATE_TYPE_PARTITIONS if table.is_incremental else None
