"""One module per database: each a `SourceDialect`, and a `CacheDialect` too where it can hold the
cache (`Dialect` is both); the interfaces and the registry are in `base`."""

from sqlalchemy.dialects import registry

from sync_assets.dialects.base import (
    CacheDialect,
    Capabilities,
    Database,
    Dialect,
    SourceDialect,
    get_dialect,
)

# duckdb-engine's own reflection does not work on SQLAlchemy 2.1; ours answers from DuckDB's catalog.
registry.register("duckdb", "sync_assets.dialects.duckdb", "DuckDBReflectingDialect")

__all__ = ["CacheDialect", "Capabilities", "Database", "Dialect", "SourceDialect", "get_dialect"]
