"""File drops in remote folders, through fsspec URLs, against real servers on 127.0.0.1: an SFTP
server (asyncssh's, password login, chrooted to a temp folder) and an S3 endpoint (moto's server).

The same manifest rules as a local folder: new and replaced files are read, a replaced file whose
modification time was kept is read again, and nothing of a failed sync is written; the password
never appears in a message, a log or sync_log.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync_assets_tests.helpers import failure_message, free_port, make_harness, materialization, sync_log_rows

asyncssh = pytest.importorskip("asyncssh")
PASSWORD = "drop-pw-7f3a91"
ORDERS = {"name": "orders", "source": "drops", "files": "orders_*.csv", "primary_key": ["order_id"]}


class _Server(asyncssh.SSHServer):  # type: ignore[misc]
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == "drop" and password == PASSWORD


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """(port, the folder it serves as /): a real SFTP server in a thread of its own."""
    root = tmp_path / "sftp_root"
    (root / "exports").mkdir(parents=True)
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def serve() -> asyncssh.SSHAcceptor:
        key = asyncssh.generate_private_key("ssh-ed25519")
        return await asyncssh.create_server(
            _Server,
            "127.0.0.1",
            port,
            server_host_keys=[key],
            sftp_factory=lambda channel: asyncssh.SFTPServer(channel, chroot=str(root)),
        )

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(serve())
        started.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        pending = asyncio.all_tasks(loop)  # sessions of clients that did not say goodbye
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30), "the SFTP server did not start"
    yield port, root / "exports"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


def write_csv(folder: Path, name: str, rows: list[tuple[int, int]], *, mtime: float | None = None) -> None:
    path = folder / name
    path.write_text("order_id,qty\n" + "".join(f"{a},{b}\n" for a, b in rows))
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def cached(cache_url: sa.URL) -> list[tuple[int, int]]:
    engine = sa.create_engine(cache_url)
    with engine.connect() as conn:
        rows = [
            (int(a), int(b)) for a, b in conn.exec_driver_sql("SELECT order_id, qty FROM orders ORDER BY 1")
        ]
    engine.dispose()
    return rows


def remote_harness(tmp_path, monkeypatch, make_database, connection: dict):
    cache_url = make_database("sqlite")
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=cache_url,
        cache_url=cache_url,
        tables=[ORDERS],
        extra={"connections": {"drops": connection, "cache": {"url": "${SYNC_TEST_CACHE_URL}"}}},
    )
    return harness, cache_url


def sync(harness, partition: str):
    return harness.sync("orders", partition, source="drops")


def test_sftp_folder_mass_dailies_and_a_file_replaced_in_place(
    tmp_path, monkeypatch, make_database, sftp_server
):
    port, exports = sftp_server
    monkeypatch.setenv("DROP_PASSWORD", PASSWORD)
    connection = {
        "type": "files",
        "url": f"sftp://drop@127.0.0.1:{port}/exports",
        "storage_options": {"password": "${DROP_PASSWORD}"},
    }
    harness, cache_url = remote_harness(tmp_path, monkeypatch, make_database, connection)
    write_csv(exports, "orders_1.csv", [(1, 10), (2, 20)], mtime=1_700_000_000)
    write_csv(exports, "other.csv", [(9, 9)])  # not matched by the glob
    result = sync(harness, "mass")
    assert result.success, failure_message(result)
    assert cached(cache_url) == [(1, 10), (2, 20)]

    # A new file, and the first one replaced with its modification time kept.
    write_csv(exports, "orders_2.csv", [(3, 30)], mtime=1_600_000_000)  # late, with an old time
    write_csv(exports, "orders_1.csv", [(1, 11), (2, 20)], mtime=1_700_000_000)
    result = sync(harness, "daily")
    assert result.success, failure_message(result)
    assert materialization(result)["sync_assets/rows_read"] == 3
    assert cached(cache_url) == [(1, 11), (2, 20), (3, 30)]

    # Nothing new: nothing read.
    result = sync(harness, "daily")
    assert result.success
    assert materialization(result)["sync_assets/rows_read"] == 0


def test_sftp_errors_name_the_folder_and_never_the_password(
    tmp_path, monkeypatch, make_database, sftp_server
):
    port, exports = sftp_server
    write_csv(exports, "orders_1.csv", [(1, 10)])
    monkeypatch.setenv("DROP_PASSWORD", PASSWORD + "-wrong")
    connection = {
        "type": "files",
        "url": f"sftp://drop@127.0.0.1:{port}/exports",
        "storage_options": {"password": "${DROP_PASSWORD}"},
    }
    harness, cache_url = remote_harness(tmp_path, monkeypatch, make_database, connection)
    result = sync(harness, "mass")
    assert not result.success
    message = failure_message(result)
    assert f"sftp://drop@127.0.0.1:{port}/exports" in message
    everything = (
        message
        + str(sync_log_rows(cache_url))
        + "".join(e.user_message for e in harness.instance.all_logs(result.run_id))
    )
    assert PASSWORD not in everything

    # A folder that is not there.
    monkeypatch.setenv("DROP_PASSWORD", PASSWORD)
    missing = {**connection, "url": f"sftp://drop@127.0.0.1:{port}/nowhere"}
    harness, _ = remote_harness(tmp_path, monkeypatch, make_database, missing)
    result = sync(harness, "mass")
    assert not result.success
    assert f"the folder sftp://drop@127.0.0.1:{port}/nowhere does not exist" in failure_message(result)


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint on 127.0.0.1 (moto's server) with one bucket, `drops`."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="drops")
    yield endpoint
    server.stop()


def test_s3_folder_mass_and_daily(tmp_path, monkeypatch, make_database, s3_endpoint):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    client.put_object(Bucket="drops", Key="exports/orders_1.csv", Body=b"order_id,qty\n1,10\n2,20\n")
    monkeypatch.setenv("S3_KEY", "test")
    monkeypatch.setenv("S3_SECRET", "test")
    connection = {
        "type": "files",
        "url": "s3://drops/exports",
        "storage_options": {"key": "${S3_KEY}", "secret": "${S3_SECRET}", "endpoint_url": s3_endpoint},
    }
    harness, cache_url = remote_harness(tmp_path, monkeypatch, make_database, connection)
    result = sync(harness, "mass")
    assert result.success, failure_message(result)
    assert cached(cache_url) == [(1, 10), (2, 20)]
    client.put_object(Bucket="drops", Key="exports/orders_2.csv", Body=b"order_id,qty\n3,30\n")
    client.put_object(Bucket="drops", Key="exports/orders_1.csv", Body=b"order_id,qty\n1,11\n2,20\n")
    result = sync(harness, "daily")
    assert result.success, failure_message(result)
    assert materialization(result)["sync_assets/rows_read"] == 3
    assert cached(cache_url) == [(1, 11), (2, 20), (3, 30)]


def test_remote_folder_catalog_rules(tmp_path):
    from sync_assets.catalog.loader import CatalogError, load_catalog

    def load(connection: str) -> None:
        path = tmp_path / "catalog.yaml"
        path.write_text(
            "connections:\n"
            f"  drops: {connection}\n"
            "  cache: {url: 'sqlite:///cache.db'}\n"
            "cache: cache\n"
            "tables:\n"
            "  - {name: orders, source: drops, files: 'o_*.csv', primary_key: [id]}\n"
        )
        load_catalog(path)

    with pytest.raises(CatalogError, match="give exactly one of `path`"):
        load("{type: files, path: /tmp, url: 'sftp://h/x'}")
    with pytest.raises(CatalogError, match="the URL holds a literal password"):
        load("{type: files, url: 'sftp://drop:hunter2@h/x'}")
    with pytest.raises(CatalogError, match="storage option 'password' is a secret"):
        load("{type: files, url: 'sftp://drop@h/x', storage_options: {password: hunter2}}")
    load("{type: files, url: 'sftp://drop@h/x', storage_options: {password: '${PW}', port: 2222}}")
