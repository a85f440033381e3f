"""Full loads into a SQLite cache through ADBC's ingest, in a process of its own.

ADBC's SQLite driver appends Arrow batches in C, about twice as fast as sqlite3's `executemany`
(figures: docs/performance.md, "Measured choices"). It links a SQLite of its own, and two copies
in one process drop each other's POSIX locks (sqlite.py's docstring), so it runs in a child
process: POSIX locks are per process, and two processes sharing a WAL database is SQLite's
ordinary case. The batches reach it as an Arrow IPC stream on its stdin, already in the stored
forms the row path writes (sqlite.py's `to_sqlite_values`); it commits once, after the last
batch. A child whose stream breaks (the sync failed, was cancelled or killed) exits without
committing. The child runs `CHILD`, not this module: importing the package would import Dagster
(2 s); pyarrow and ADBC take 0.4 s, spent while the first batch is read.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Final

import polars as pl
import pyarrow as pa

# The child waits for other writers as the sync's own connection does (sqlite.py).
BUSY_TIMEOUT_MS: Final = 300_000
# What the child prints before its error, so the parent can tell a refused row from a crash.
ERROR_MARK: Final = "sync_assets_ingest_error:"
# SQLite's words for a row a constraint refused (UNIQUE, NOT NULL, CHECK).
CONSTRAINT_FAILED: Final = "constraint failed"
BUSY: Final = "database is locked"


class IngestError(Exception):
    """The child refused the rows (a constraint, a full disk) or did not finish."""

    def __init__(self, message: str, *, constraint: bool = False) -> None:
        super().__init__(message)
        self.constraint = constraint
        self.busy = BUSY in message


def available() -> bool:
    try:
        import adbc_driver_sqlite  # noqa: F401
    except ImportError:
        return False
    return True


def copy(database: str, table: str, frames: Iterator[pl.DataFrame]) -> None:
    """Append every frame (in stored forms) to `table` of the SQLite file `database`, committed
    at the end; an IngestError names what the loader refused."""
    child = subprocess.Popen(
        # -I: no user site, no environment, not the working directory on sys.path.
        [sys.executable, "-I", "-c", CHILD, database, table, str(BUSY_TIMEOUT_MS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stderr is not None
    writer: pa.ipc.RecordBatchStreamWriter | None = None
    try:
        try:
            for frame in frames:
                batch = frame.to_arrow()
                if writer is None:
                    writer = pa.ipc.new_stream(child.stdin, batch.schema)
                writer.write_table(batch)
            if writer is not None:
                writer.close()
            child.stdin.close()
        except BrokenPipeError:
            pass  # the child stopped reading: its own error says why
        except BaseException:
            child.kill()  # never commit a load the sync abandoned
            raise
        errors = child.stderr.read().decode(errors="replace")
        if child.wait() != 0:
            raise _failure(errors, child.returncode)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        with contextlib.suppress(OSError):  # a broken pipe still holds unflushed bytes
            child.stdin.close()
        child.stderr.close()


def _failure(errors: str, code: int) -> IngestError:
    marked = [line.split(ERROR_MARK, 1)[1].strip() for line in errors.splitlines() if ERROR_MARK in line]
    if marked:
        return IngestError(marked[-1], constraint=CONSTRAINT_FAILED in marked[-1])
    shown = errors.strip().splitlines()[-1] if errors.strip() else f"exit status {code}"
    return IngestError(f"the SQLite loader process failed: {shown}")


CHILD: Final = f"""
import sys
import adbc_driver_sqlite.dbapi as adbc
import pyarrow as pa

database, table, busy_timeout_ms = sys.argv[1:4]
try:
    reader = pa.ipc.open_stream(sys.stdin.buffer)
except pa.ArrowInvalid:
    sys.exit(0)  # no batch at all: nothing to load
connection = adbc.connect(database)
try:
    cursor = connection.cursor()
    # Inside ADBC's transaction (synchronous cannot change there: one commit, one WAL sync).
    for pragma in ("busy_timeout = " + str(int(busy_timeout_ms)), "wal_autocheckpoint = 0"):
        cursor.execute("PRAGMA " + pragma)
    cursor.adbc_ingest(table, reader, mode="append")
    connection.commit()
except Exception as err:
    print("{ERROR_MARK}", err, file=sys.stderr, flush=True)
    sys.exit(1)
finally:
    connection.close()
"""
