"""Dagster resources: one SqlDatabase per catalog connection."""

from sync_assets.resources.database import SqlDatabase

__all__ = ["SqlDatabase"]
