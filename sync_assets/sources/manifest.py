"""The manifest of a file-drop table, in the cache: which files its syncs have loaded, as they were.

An incremental reads the files whose path or content (SHA-256) the manifest does not have. The
sync's commit updates it in the same transaction as the rows, so a failed sync leaves both as
they were, and the next one reads the same files again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from sync_assets.catalog.models import SYNC_FILES_TABLE

CHUNK = 500  # paths per IN list: under every database's bound-parameter limit

sync_files = sa.Table(
    SYNC_FILES_TABLE,
    sa.MetaData(),
    sa.Column("table_name", sa.String(128), primary_key=True),
    sa.Column("path", sa.String(400), primary_key=True, comment="relative to the connection's folder"),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("modified", sa.DateTime, nullable=False, comment="UTC"),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("loaded_at", sa.DateTime, nullable=False, comment="UTC"),
)


@dataclass(frozen=True)
class Dropped:
    """A file as a sync found it."""

    path: str
    size: int
    modified: datetime
    sha256: str


def loaded_files(conn: sa.Connection, table: str) -> dict[str, str]:
    """path -> sha256 of the files the table's syncs have loaded (creating the manifest if missing)."""
    sync_files.create(conn, checkfirst=True)
    conn.commit()
    rows = conn.execute(
        sa.select(sync_files.c.path, sync_files.c.sha256).where(sync_files.c.table_name == table)
    ).all()
    conn.commit()
    return {row.path: row.sha256 for row in rows}


def record_files(conn: sa.Connection, table: str, files: Sequence[Dropped], *, full: bool) -> None:
    """Inside the sync's commit: a full load's files replace the manifest; an incremental's are
    added (a file read again replaces its own row)."""
    mine = sync_files.c.table_name == table
    if full:
        conn.execute(sa.delete(sync_files).where(mine))
    else:
        paths = [f.path for f in files]
        for start in range(0, len(paths), CHUNK):
            conn.execute(
                sa.delete(sync_files).where(mine, sync_files.c.path.in_(paths[start : start + CHUNK]))
            )
    stamp = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {"table_name": table, "path": f.path, "size": f.size, "modified": f.modified, "sha256": f.sha256}
        for f in files
    ]
    if rows:
        conn.execute(sa.insert(sync_files), [{**row, "loaded_at": stamp} for row in rows])
