"""Where a file drop's files are: a local folder, or a remote one behind an fsspec URL.

The file-drop source lists files (name, size, modification time) and reads each from a local
path. A remote file (`sftp://`, `s3://`, any fsspec protocol; the `remote` extra installs SFTP and
S3) is downloaded once per sync into a temporary folder, streamed, so the readers and the content
hash work on it as on a local file; it is deleted once read or found unchanged.
"""

from __future__ import annotations

import errno
import shutil
import socket
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

_COPY_CHUNK = 1 << 20


class FolderMissing(FileNotFoundError):
    """The connection's folder itself is not there."""


@dataclass(frozen=True)
class Listed:
    name: str  # relative to the folder, with forward slashes
    size: int
    modified: datetime  # UTC, naive


class Folder(Protocol):
    def describe(self) -> str:
        """The folder as messages show it (a URL without its password)."""

    def listing(self, pattern: str) -> list[Listed]:
        """The files matching a glob under the folder."""

    def fetch(self, name: str) -> Path:
        """A local path holding the file's bytes."""

    def release(self, name: str) -> None:
        """Done with a fetched file (a downloaded copy is deleted)."""

    def close(self) -> None: ...

    def is_transient(self, error: BaseException) -> bool: ...


class LocalFolder:
    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return f"folder {self.path}"

    def listing(self, pattern: str) -> list[Listed]:
        if not self.path.is_dir():
            msg = f"the folder {self.path} does not exist"
            raise FolderMissing(msg)
        found = []
        for path in self.path.glob(pattern):
            if path.is_file():
                stat = path.stat()
                modified = datetime.fromtimestamp(stat.st_mtime, UTC).replace(tzinfo=None)
                found.append(Listed(path.relative_to(self.path).as_posix(), stat.st_size, modified))
        return found

    def fetch(self, name: str) -> Path:
        return self.path / name

    def release(self, name: str) -> None:
        pass

    def close(self) -> None:
        pass

    def is_transient(self, error: BaseException) -> bool:
        return False


class RemoteFolder:
    """A folder behind an fsspec URL, listed and downloaded through its filesystem."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        import fsspec

        self.url = url
        # A filesystem of its own per sync: fsspec's instance cache would keep one connection for
        # the life of the process, stale after a server restart.
        self.fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)
        self.root = root.rstrip("/")
        self.downloads = Path(tempfile.mkdtemp(prefix="sync_assets_drop_"))
        self.fetched: dict[str, Path] = {}

    def describe(self) -> str:
        return f"folder {shown_url(self.url)}"

    def listing(self, pattern: str) -> list[Listed]:
        if not self.fs.isdir(self.root):
            msg = f"the folder {shown_url(self.url)} does not exist"
            raise FolderMissing(msg)
        found = []
        for path, info in self.fs.glob(f"{self.root}/{pattern}", detail=True).items():
            if info.get("type") != "file":
                continue
            name = path[len(self.root) + 1 :] if path.startswith(self.root + "/") else path.rsplit("/", 1)[-1]
            found.append(Listed(name, int(info.get("size") or 0), _modified(info)))
        return found

    def fetch(self, name: str) -> Path:
        if name not in self.fetched:
            local = self.downloads / f"{len(self.fetched)}_{Path(name).name}"
            with self.fs.open(f"{self.root}/{name}", "rb") as remote, local.open("wb") as copy:
                shutil.copyfileobj(remote, copy, _COPY_CHUNK)
            self.fetched[name] = local
        return self.fetched[name]

    def release(self, name: str) -> None:
        local = self.fetched.pop(name, None)
        if local is not None:
            local.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.downloads, ignore_errors=True)
        client = getattr(self.fs, "client", None)  # SFTP: paramiko's SSH connection, not pooled
        if client is not None and callable(getattr(client, "close", None)):
            client.close()

    def is_transient(self, error: BaseException) -> bool:
        return is_transient(error)


_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}


def is_transient(error: BaseException) -> bool:
    """A dropped or refused connection, a timeout: the server may be back at the next try.
    paramiko reports a refused connection as NoValidConnectionsError, an OSError without errno."""
    if isinstance(error, ConnectionError | TimeoutError | socket.timeout | EOFError):
        return True
    if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
        return True
    return type(error).__name__ == "NoValidConnectionsError"


def _modified(info: dict[str, Any]) -> datetime:
    """The modification time in whatever form the backend gives it (SFTP: epoch seconds; S3: an
    aware datetime as LastModified), as naive UTC."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                continue
            return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
    return datetime(1970, 1, 1)  # a backend that tells no time: ordering falls back to names


def shown_url(url: str) -> str:
    """The URL without a password in it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
