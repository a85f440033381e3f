"""Building catalogs, source tables and Dagster runs for the tests (real databases only)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from sync_assets.assets.factory import build_definitions
from sync_assets.catalog.loader import load_catalog
from sync_assets.sync.audit import sync_log

BASE_TIME = datetime(2026, 3, 1, 8, 0, 0, 123456)
ROOT = Path(__file__).resolve().parent.parent
# The engines that run here, and every (source, cache) pair of them, with readable test ids.
ENGINES = ["sqlite", "duckdb", "postgresql"]
ENGINE_PAIRS = [(s, c) for s in ENGINES for c in ENGINES]
ENGINE_PAIR_IDS = [f"{s}-to-{c}" for s, c in ENGINE_PAIRS]

# The catalog entry of the `orders` source table that create_source makes.
ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}


def orders_table(metadata: sa.MetaData, name: str = "orders", *, primary_key: bool = True) -> sa.Table:
    """A source table with every kind of value the cache must keep exactly."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.BigInteger, primary_key=primary_key, autoincrement=False),
        sa.Column("code", sa.String(10)),
        sa.Column("name", sa.UnicodeText),
        sa.Column("amount", sa.Numeric(15, 4)),
        sa.Column("big_amount", sa.Numeric(30, 10)),
        sa.Column("ratio", sa.Double),
        sa.Column("qty", sa.Integer),
        sa.Column("active", sa.Boolean),
        sa.Column("due", sa.Date),
        sa.Column("note", sa.Text),
        sa.Column("payload", sa.LargeBinary),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


NAMES = ["Zürich", "東京 🚀", "", 'O\'Brien "quoted", comma', "naïve café", "plain"]


def order_row(i: int, *, updated_at: datetime | None = None, version: int = 0) -> dict[str, Any]:
    return {
        "id": i,
        "code": f"C{i % 97:03d}",
        "name": NAMES[i % len(NAMES)] + ("" if version == 0 else f" v{version}"),
        "amount": Decimal(f"{(i * 7919) % 100000}.{i % 10000:04d}") * (-1 if i % 11 == 0 else 1),
        "big_amount": None if i % 5 == 0 else Decimal(f"{i * 1234567}.{i % 9999999999:010d}"),
        "ratio": i / 7 if i % 4 else None,
        "qty": i % 1000 - 500 + version,
        "active": None if i % 13 == 0 else i % 2 == 0,
        "due": None if i % 3 == 0 else date(2026, 1, 1) + timedelta(days=i % 400),
        "note": None if i % 2 else f"note {i}\nline two\ttab",
        "payload": None if i % 6 == 0 else bytes([i % 256, 0, 255, (i * 3) % 256]),
        "updated_at": updated_at or BASE_TIME + timedelta(seconds=i, microseconds=i),
    }


def create_source(
    url: sa.URL, rows: Iterable[dict[str, Any]], *, name: str = "orders", primary_key: bool = True
) -> sa.Table:
    engine = sa.create_engine(url)
    metadata = sa.MetaData()
    table = orders_table(metadata, name, primary_key=primary_key)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), list(rows))
    engine.dispose()
    return table


def upsert_source(url: sa.URL, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for row in rows:
            conn.execute(sa.delete(table).where(table.c.id == row["id"]))
        conn.execute(table.insert(), list(rows))
    engine.dispose()


def read_rows(url: sa.URL, table_name: str, *, key: str = "id") -> list[tuple[Any, ...]]:
    """All rows, in key order, with values made comparable across SQLite and PostgreSQL."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        table = sa.Table(table_name, sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(table).order_by(table.c[key])).all()
        names = [c.name for c in table.columns]
    engine.dispose()
    return [tuple(_canonical(name, value) for name, value in zip(names, row, strict=True)) for row in rows]


def _canonical(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in ("amount", "big_amount"):
        return Decimal(str(value)).normalize()
    if name == "active":
        return bool(value)
    if name == "payload":
        return bytes(value)
    if name == "updated_at" and isinstance(value, str):
        return datetime.fromisoformat(value)
    if name == "due" and isinstance(value, str):
        return date.fromisoformat(value)
    return value


def grow_source(url: sa.URL, *, first_id: int, rows: int, name: str = "orders") -> None:
    """Append `rows` generated rows inside SQLite itself (fast, no Python loop)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :first + :rows - 1) "
                f"INSERT INTO {name} (id, code, name, amount, big_amount, ratio, qty, active, due, note, payload, "
                "updated_at) SELECT i, 'K' || (i % 100), 'bulk row ' || i, (i % 100000) / 100.0, NULL, i / 3.0, "
                "i % 1000, i % 2, '2026-01-01', NULL, NULL, "
                "'2026-04-01 00:00:00.' || substr('000000' || (i % 1000000), -6) FROM n"
            ),
            {"first": first_id, "rows": rows},
        )
    engine.dispose()


def materialize_cli(
    catalog: Path, home: Path, *, select: str, partition: str | None = "mass", **popen: Any
) -> subprocess.Popen[str]:
    """`dagster asset materialize` in its own process, on the given catalog and DAGSTER_HOME.

    `partition=None` for mass-only tables, which have no partitions. Its output comes through a
    pipe, or goes where `stdout=` says.
    """
    env = {**os.environ, "SYNC_ASSETS_CATALOG": str(catalog), "DAGSTER_HOME": str(home)}
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "sync_assets.definitions"]
    command += ["--select", select] + (["--partition", partition] if partition else [])
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **popen}
    return subprocess.Popen(command, env=env, **popen)


def wait_until(condition: Callable[[], bool], what: str, *, seconds: float = 180) -> None:
    """Poll `condition` until it holds: for what will certainly happen, with a generous deadline."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.5)


def staging_tables(url: sa.URL) -> list[str]:
    """Staging and fresh tables left in the cache (there must never be any after a sync ends)."""
    engine = sa.create_engine(url)
    names = [
        t
        for t in sa.inspect(engine).get_table_names()
        if t.startswith("_sync_stage") or t.endswith(("__sync_new", "__sync_old"))
    ]
    engine.dispose()
    return names


def sync_log_rows(url: sa.URL, table: str | None = None) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        query = sa.select(sync_log).order_by(sync_log.c.id)
        if table is not None:
            query = query.where(sync_log.c.table_name == table)
        rows = [dict(r._mapping) for r in conn.execute(query)]
    engine.dispose()
    return rows


@dataclass
class Harness:
    """A catalog in a temp folder, its definitions, and one Dagster instance shared by its runs."""

    path: Path
    instance: dg.DagsterInstance = field(default_factory=dg.DagsterInstance.ephemeral)

    @property
    def defs(self) -> dg.Definitions:
        return build_definitions(load_catalog(self.path))

    def sync(self, table: str, partition: str, *, source: str = "src") -> dg.ExecuteInProcessResult:
        """One table's sync; a mass-only (unpartitioned) table takes no partition, only "mass"."""
        defs = self.defs
        key = dg.AssetKey([source, table])
        partitioned = defs.resolve_asset_graph().get(key).partitions_def is not None
        assert partitioned or partition == "mass", f"{table} has no partitions: only its mass can run"
        return defs.resolve_implicit_global_asset_job_def().execute_in_process(
            partition_key=partition if partitioned else None,
            asset_selection=[key],
            instance=self.instance,
            raise_on_error=False,
        )


def make_harness(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    source_url: sa.URL,
    cache_url: sa.URL,
    tables: list[dict[str, Any]],
    defaults: dict[str, Any] | None = None,
    connection: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Harness:
    """Write a catalog whose URLs come from environment variables, as in production."""
    monkeypatch.setenv("SYNC_TEST_SOURCE_URL", source_url.render_as_string(hide_password=False))
    monkeypatch.setenv("SYNC_TEST_CACHE_URL", cache_url.render_as_string(hide_password=False))
    catalog = {
        "connections": {
            "src": {"url": "${SYNC_TEST_SOURCE_URL}", **(connection or {})},
            "cache": {"url": "${SYNC_TEST_CACHE_URL}"},
        },
        "cache": "cache",
        "tables": [{"source": "src", **t} for t in tables],
    }
    if defaults:
        catalog["defaults"] = defaults
    catalog.update(extra or {})
    path = tmp_path / f"catalog_{os.getpid()}_{len(list(tmp_path.glob('catalog_*')))}.yaml"
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    return Harness(path)


def synced(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    """The run's materializations of its own partition: the syncs (a full load also records the
    table's other update types as brought up to date)."""
    partition = result.dagster_run.tags.get("dagster/partition")
    events = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    return [m for m in events if m.partition == partition]


def materialization(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """The metadata of the run's single sync, as plain values."""
    (event,) = synced(result)
    metadata = event.metadata
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected the step to fail"
    return "\n".join(str(e.step_failure_data.error) for e in failures)  # type: ignore[union-attr]


def free_port() -> int:
    """A loopback port nothing listens on (for now): a server to start, or a refused connection."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_schedule(instance: dg.DagsterInstance, defs: dg.Definitions, name: str, at: datetime) -> None:
    """Start a schedule as the UI or `dagster schedule start` does, but as of `at` (in the past, or
    ahead): a RUNNING instigator state stamped with that start time, which staleness counts from."""
    from dagster._core.remote_representation.external import RemoteRepository
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._core.remote_representation.handle import RepositoryHandle
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        ScheduleInstigatorData,
    )

    repository = RemoteRepository(
        RepositorySnap.from_def(defs.get_repository_def()),
        RepositoryHandle.for_test(location_name="sync_assets", repository_name="__repository__"),
        auto_materialize_use_sensors=False,
    )
    schedule = repository.get_schedule(name)
    instance.add_instigator_state(
        InstigatorState(
            schedule.get_remote_origin(),
            InstigatorType.SCHEDULE,
            InstigatorStatus.RUNNING,
            ScheduleInstigatorData(schedule.cron_schedule, start_timestamp=at.timestamp()),
        )
    )


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers: a source that hangs.

    Every connection is held open and never read, so a client waits until its own timeout fires.
    """
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            held.append(client)

    threading.Thread(target=accept, name="silent server", daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        server.close()
        for client in held:
            client.close()


class FlakyProxy:
    """A TCP front for the test PostgreSQL that drops its first `drops` connections, and holds
    those after the first `answered` ones it forwards open without a word (None: forwards all)."""

    def __init__(self, upstream: sa.URL, drops: int = 1, answered: int | None = None) -> None:
        self.drops, self.answered = drops, answered
        self.accepted = 0
        self.held: list[socket.socket] = []
        host = upstream.query.get("host")
        self.unix_path = f"{host}/.s.PGSQL.{upstream.port or 5432}" if host else None
        self.tcp = (upstream.host or "127.0.0.1", upstream.port or 5432)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = sa.URL.create(  # the upstream database, reached through this proxy
            "postgresql+psycopg",
            username=upstream.username,
            host="127.0.0.1",
            port=self.port,
            database=upstream.database,
        )
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drops:
                client.close()  # the connection is dropped before the server greets it
                continue
            if self.answered is not None and self.accepted > self.drops + self.answered:
                self.held.append(client)  # accepted, never answered
                continue
            if self.unix_path:
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.unix_path)
            else:
                upstream = socket.create_connection(self.tcp)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        for client in self.held:
            client.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


PSQLODBC = "PostgreSQL Unicode"


def psqlodbc_connection_string(url: sa.URL) -> str:
    """An ODBC connection string to the PostgreSQL of `url` through psqlODBC, a real ODBC driver
    that runs here; it takes a unix socket directory as its Servername, like libpq's host."""
    server = url.query.get("host") or url.host or "localhost"
    parts = {
        "DRIVER": PSQLODBC,
        "Servername": server if isinstance(server, str) else server[0],
        "Port": str(url.port or 5432),
        "Database": url.database or "postgres",
        "UID": url.username or "",
        "PWD": url.password or "",
    }
    return ";".join(f"{k}={_odbc_value(v)}" for k, v in parts.items())


def _odbc_value(value: str) -> str:
    """An ODBC connection-string value; braced only when needed (psqlODBC reads "{5432}" as text)."""
    if any(c in value for c in ";{}") or value != value.strip():
        return "{" + value.replace("}", "}}") + "}"
    return value
