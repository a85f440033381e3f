"""The errors sync_assets raises, each naming what is at fault (file line, table, column, variable)."""

from __future__ import annotations

import sqlalchemy as sa


class SyncError(Exception):
    """Base class; `table` names the catalog table the error belongs to, when there is one."""

    def __init__(self, message: str, *, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table


class SyncTransientError(SyncError):
    """A failure that may clear up by itself (connection dropped, timeout, deadlock): retried."""


class SyncCancelled(KeyboardInterrupt):
    """The sync was interrupted (Ctrl-C, SIGTERM, a run terminated from the UI) and recorded as
    cancelled in sync_log. A KeyboardInterrupt, not a SyncError: whatever stops on an interrupt
    still stops, and nothing retries it."""

    def __init__(self, message: str, *, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table


class CatalogError(SyncError):
    """The table catalog is malformed: raised when definitions load, with file and line."""


class MissingEnvironmentVariable(SyncError):
    """A ${VAR} placeholder of a connection has no value in the environment of the sync."""

    def __init__(self, variable: str, *, connection: str | None, table: str | None) -> None:
        where = f"table '{table}': " if table else ""
        via = f" (connection '{connection}')" if connection else ""
        msg = f"{where}environment variable {variable} is not set{via}"
        super().__init__(msg, table=table)
        self.variable = variable


class ColumnNotFound(SyncError):
    """A column named by the catalog (key, watermark) is not in the source table."""

    def __init__(self, table: str, column: str, role: str, available: list[str]) -> None:
        msg = (
            f"table '{table}': {role} column '{column}' is not in the source "
            f"(source columns after renames: {', '.join(available)})"
        )
        super().__init__(msg, table=table)
        self.column = column


class UnsupportedType(SyncError):
    """A source column has a type sync_assets cannot map without losing data."""

    def __init__(self, table: str, column: str, type_name: str) -> None:
        msg = f"table '{table}': column '{column}' has type {type_name}, which cannot be cached losslessly"
        super().__init__(msg, table=table)
        self.column = column


class LossyType(SyncError):
    """The cache cannot hold a source column's values exactly, and the catalog did not allow it."""

    def __init__(self, table: str, column: str, source_type: str, loss: str) -> None:
        msg = (
            f"table '{table}': column '{column}' ({source_type}) would lose data in the cache: {loss}; "
            f"nothing was changed (list the column under `allow_lossy` to accept the loss)"
        )
        super().__init__(msg, table=table)
        self.column = column


class SchemaMismatch(SyncError):
    """The existing target table no longer matches what the source delivers; nothing was changed."""


class UpdateTypeNotAllowed(SyncError):
    """An incremental update was asked of a table that has no watermark column."""


class DataError(SyncError):
    """A source value cannot be converted to its column's type."""


def describe_error(err: BaseException, *, phase: str | None, connection: str | None = None) -> str:
    """One line for sync_log and the UI: the driver's message without the SQL statement, after the
    phase and the connection it happened on, when known."""
    if isinstance(err, sa.exc.DBAPIError) and err.orig is not None:
        text = f"{type(err.orig).__name__}: {str(err.orig).strip()}"
    elif isinstance(err, SyncError):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    if connection:
        text = f"{connection}: {text}"
    return f"{phase} phase: {text}" if phase else text
