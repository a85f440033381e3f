"""Materialization metadata of a sync: the counts, timings and watermarks the UI shows and plots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from sync_assets.sync.runner import SyncResult


def result_metadata(result: SyncResult, descriptions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`descriptions` (cache column -> text, the catalog's) fill the UI's Columns table."""
    described = descriptions or {}
    columns = [
        dg.TableColumn(c.name, str(c.type).lower(), description=described.get(c.name))
        for c in result.target_table.columns
    ]
    return {
        "dagster/row_count": dg.MetadataValue.int(result.row_count),
        "dagster/column_schema": dg.TableSchema(columns=columns),
        "sync_assets/mode": result.mode,
        "sync_assets/rows_read": dg.MetadataValue.int(result.rows_read),
        "sync_assets/rows_inserted": dg.MetadataValue.int(result.rows_inserted),
        "sync_assets/rows_updated": dg.MetadataValue.int(result.rows_updated),
        "sync_assets/rows_unchanged": dg.MetadataValue.int(result.rows_unchanged),
        "sync_assets/rows_deleted": dg.MetadataValue.int(result.rows_deleted),
        "sync_assets/hashes_compared": dg.MetadataValue.int(result.hashes_compared),
        "sync_assets/duration_s": dg.MetadataValue.float(round(result.seconds, 3)),
        "sync_assets/rows_per_second": dg.MetadataValue.float(round(result.rows_per_second, 1)),
        "sync_assets/watermark_from": result.watermark_from or "",
        "sync_assets/watermark_to": result.watermark_to or "",
    }
