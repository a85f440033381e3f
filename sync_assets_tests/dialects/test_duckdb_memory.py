"""DuckDB's buffer pool is bounded for sync_assets' connections (its default, 80% of RAM, grew a
process with the table it synced), unless the URL sets its own `memory_limit`."""

from __future__ import annotations

import sqlalchemy as sa

from sync_assets.dialects.duckdb import memory_limit
from sync_assets.resources.database import SqlDatabase


def _setting(resource: SqlDatabase, role: str) -> str:
    with resource.engine(role=role) as (engine, _dialect), engine.connect() as conn:  # type: ignore[arg-type]
        return conn.execute(sa.text("SELECT current_setting('memory_limit')")).scalar_one()


def _mib(limit: str) -> float:
    number, unit = limit.split()
    return float(number) * {"MiB": 1, "GiB": 1024}[unit]


def test_our_connections_cap_the_buffer_pool(tmp_path):
    expected = int(memory_limit().removesuffix("MB")) * 10**6 / 2**20
    for role in ("cache", "source"):
        resource = SqlDatabase(name="db", url=f"duckdb:///{tmp_path / 'db.duckdb'}")
        assert abs(_mib(_setting(resource, role)) - expected) < 1, role


def test_a_memory_limit_in_the_url_wins(tmp_path):
    resource = SqlDatabase(name="db", url=f"duckdb:///{tmp_path / 'db.duckdb'}?memory_limit=1GB")
    assert abs(_mib(_setting(resource, "cache")) - 10**9 / 2**20) < 1  # DuckDB shows 1GB as 953.6 MiB
