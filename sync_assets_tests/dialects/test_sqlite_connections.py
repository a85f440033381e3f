"""A SQLite cache connection is set up for reloads; a SQLite source connection is left as it is."""

from __future__ import annotations

from sync_assets.resources.database import SqlDatabase

SECURE_DELETE_FAST = 2  # https://www.sqlite.org/pragma.html#pragma_secure_delete


def _pragmas(database: SqlDatabase, role: str) -> dict[str, object]:
    names = ["journal_mode", "synchronous", "wal_autocheckpoint", "secure_delete", "threads"]
    with database.engine(role=role) as (engine, _dialect), engine.connect() as conn:
        return {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar_one() for name in names}


def test_cache_connections_defer_checkpoints_skip_zeroing_and_sort_with_a_helper_thread(tmp_path):
    cache = SqlDatabase(name="cache", url=f"sqlite:///{tmp_path / 'cache.sqlite'}")
    assert _pragmas(cache, "cache") == {
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL: a power cut may lose the newest commits, never consistency
        "wal_autocheckpoint": 0,
        "secure_delete": SECURE_DELETE_FAST,
        "threads": 2,
    }


def test_source_connections_keep_the_files_own_settings(tmp_path):
    source = SqlDatabase(name="erp", url=f"sqlite:///{tmp_path / 'source.sqlite'}")
    pragmas = _pragmas(source, "source")
    assert pragmas["journal_mode"] == "delete"
    assert pragmas["wal_autocheckpoint"] == 1000
    assert pragmas["threads"] == 0
