"""One module per cache/source database behind the `Dialect` interface of `base`."""

from sqlalchemy.dialects import registry

from sync_assets.dialects.base import Capabilities, Dialect, get_dialect

# duckdb-engine's own reflection does not work on SQLAlchemy 2.1; ours answers from DuckDB's catalog.
registry.register("duckdb", "sync_assets.dialects.duckdb", "DuckDBReflectingDialect")

__all__ = ["Capabilities", "Dialect", "get_dialect"]
