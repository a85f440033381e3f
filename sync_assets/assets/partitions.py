"""The update-type partitions every table asset shares."""

from __future__ import annotations

import dagster as dg

from sync_assets.catalog.models import UpdateType

UPDATE_TYPE_PARTITIONS = dg.StaticPartitionsDefinition([u.value for u in UpdateType])
