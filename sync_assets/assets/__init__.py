"""Catalog tables as Dagster assets."""
