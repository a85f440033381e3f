"""Connections that fail (sync_assets issue 10): refused logins fail once, silent servers time out,
and every error names the catalog connection and the phase.

The PostgreSQL errors come from the real drivers against the test server: a role that needs a
password (its own pg_hba.conf line), a port nothing listens on, a server that never answers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import psycopg
import psycopg2
import pytest
import sqlalchemy as sa

from sync_assets.dialects import get_dialect
from sync_assets.dialects.base import Timeouts
from sync_assets_tests.helpers import (
    FlakyProxy,
    create_source,
    failure_message,
    free_port,
    make_harness,
    order_row,
    read_rows,
    silent_server,
    sync_log_rows,
)

ORDERS = {"name": "orders", "source_table": "orders", "primary_key": ["id"], "updated_at": "updated_at"}
RETRIES = {"max_retries": 2, "delay": "0.2s", "jitter": False}
ROLE, PASSWORD = "sync_pw_reader", "Right-Pw-5e2a"
WRONG = "Wrong-Pw-0c4d"
PG = get_dialect("postgresql")


def _events(result: dg.ExecuteInProcessResult, kind: str) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.event_type_value == kind]


def _messages(harness, run_id: str) -> list[str]:
    return [entry.user_message for entry in harness.instance.all_logs(run_id)]


@pytest.fixture
def password_role(pg_admin_url: sa.URL, make_pg_database) -> Iterator[sa.URL]:
    """A source database read by a role that must give its password: a pg_hba.conf line for that
    role alone, ahead of the server's trust lines. Yields the URL without the password."""
    source_url = make_pg_database()
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        hba = Path(conn.execute(sa.text("SHOW hba_file")).scalar_one())
        if not os.access(hba, os.W_OK):
            admin.dispose()
            pytest.skip(f"{hba} is not writable here (SYNC_TEST_PG_URL points at another server)")
        conn.execute(sa.text(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"))
        conn.execute(sa.text(f'GRANT ALL ON DATABASE "{source_url.database}" TO {ROLE}'))
    original = hba.read_text()
    rule = f"local all {ROLE} scram-sha-256\nhost all {ROLE} 127.0.0.1/32 scram-sha-256\n"
    hba.write_text(rule + original)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_reload_conf()"))
        create_source(source_url, [order_row(i) for i in range(1, 21)])
        engine = sa.create_engine(source_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"GRANT SELECT ON orders TO {ROLE}"))
        engine.dispose()
        yield source_url.set(username=ROLE, password=None)
    finally:
        hba.write_text(original)
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_reload_conf()"))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{source_url.database}" WITH (FORCE)'))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {ROLE}"))
        admin.dispose()


def _with_password(harness, monkeypatch: pytest.MonkeyPatch, password: str) -> None:
    text = harness.path.read_text().replace(
        "url: ${SYNC_TEST_SOURCE_URL}", "url: ${SYNC_TEST_SOURCE_URL}\n    password: ${SYNC_TEST_PASSWORD}"
    )
    harness.path.write_text(text)
    monkeypatch.setenv("SYNC_TEST_PASSWORD", password)


def test_a_wrong_password_fails_once_naming_the_connection(
    tmp_path, monkeypatch, make_database, password_role
):
    """Retried four times before, for 100 s, and repeated bad logins lock service accounts."""
    cache_url = make_database("sqlite")
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=password_role,
        cache_url=cache_url,
        tables=[ORDERS],
        connection={"retries": RETRIES},
    )
    _with_password(harness, monkeypatch, WRONG)
    result = harness.sync("orders", "mass")

    assert not result.success
    assert not _events(result, "STEP_UP_FOR_RETRY"), "a refused login is never retried"
    message = failure_message(result)
    assert (
        f"table 'orders' (mass): connect phase: source connection 'src' (postgresql+psycopg://{ROLE}:***@"
        in (message)
    )
    assert f'password authentication failed for user "{ROLE}"' in message
    (attempt,) = sync_log_rows(cache_url, "orders")
    assert attempt["status"] == "failed" and attempt["error"].startswith(
        "connect phase: source connection 'src'"
    )
    everything = [message, str(attempt), *_messages(harness, result.run_id)]
    assert not [text for text in everything if WRONG in text], "the password never appears"

    # The same role with its right password syncs: the refusal was the password's alone.
    monkeypatch.setenv("SYNC_TEST_PASSWORD", PASSWORD)
    assert harness.sync("orders", "mass").success
    assert len(read_rows(cache_url, "orders")) == 20


def _connect_error(connect) -> BaseException:
    with pytest.raises(Exception) as caught:  # each driver raises its own class
        connect()
    return caught.value


def _psycopg(url: sa.URL, **options):
    host = url.query.get("host") or url.host
    return lambda: psycopg.connect(host=host, port=url.port, dbname=url.database, **options)


def test_startup_refusals_of_every_postgresql_driver_are_permanent(password_role, pg_admin_url):
    """libpq keeps no SQLSTATE for a refused connection (the reply to the startup packet); psycopg,
    psycopg2 and ADBC raise it without one, and the dialect reads the server's reply."""
    host = password_role.query["host"]
    database = password_role.database
    errors = {
        "psycopg": _connect_error(_psycopg(password_role, user=ROLE, password=WRONG)),
        "psycopg2": _connect_error(
            lambda: psycopg2.connect(host=host, dbname=database, user=ROLE, password=WRONG)
        ),
        "adbc": _connect_error(lambda: adbc.connect(f"postgresql://{ROLE}:{WRONG}@/{database}?host={host}")),
        "no password given": _connect_error(_psycopg(password_role, user=ROLE)),
        "no such database": _connect_error(
            _psycopg(password_role.set(database="sync_no_such_db"), user=pg_admin_url.username)
        ),
        "no such role": _connect_error(_psycopg(password_role, user="sync_no_such_role")),
    }
    for name, error in errors.items():
        assert getattr(error, "sqlstate", getattr(error, "pgcode", None)) is None, (
            f"{name}: libpq has no SQLSTATE"
        )
        assert PG.is_permanent(error) and not PG.is_transient(error), f"{name}: {error}"


def test_startup_failures_that_clear_up_stay_transient(pg_admin_url, make_pg_database):
    """Nothing listening, a server that never answers, and a server that is full (here: the role's
    connection limit) are retried."""
    url = make_pg_database()
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE ROLE sync_full LOGIN CONNECTION LIMIT 0"))
    try:
        full = _connect_error(_psycopg(url, user="sync_full"))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("DROP ROLE sync_full"))
        admin.dispose()
    assert 'too many connections for role "sync_full"' in str(full)
    refused = _connect_error(lambda: psycopg.connect(host="127.0.0.1", port=free_port(), connect_timeout=2))
    with silent_server() as port:
        silent = {
            "psycopg": _connect_error(
                lambda: psycopg.connect(host="127.0.0.1", port=port, connect_timeout=1)
            ),
            "psycopg2": _connect_error(
                lambda: psycopg2.connect(host="127.0.0.1", port=port, connect_timeout=1)
            ),
            "adbc": _connect_error(
                lambda: adbc.connect(f"postgresql://u@127.0.0.1:{port}/x?connect_timeout=1")
            ),
        }
    for name, error in {"full": full, "refused": refused, **silent}.items():
        assert PG.is_transient(error) and not PG.is_permanent(error), f"{name}: {error}"


@contextlib.contextmanager
def _pools_instance(harness) -> Iterator[dg.DagsterInstance]:
    """The harness's runs on an instance with the repository's pool limit (one sync per table)."""
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        harness.instance = instance
        yield instance


def test_a_source_that_never_answers_times_out_and_the_step_ends(tmp_path, monkeypatch, make_database):
    """Hung for ever before: no connect timeout, sync_log stayed `running`, the pool slot stayed held."""
    cache_url = make_database("sqlite")
    with silent_server() as port:
        source_url = sa.make_url(f"postgresql+psycopg://erp_reader@127.0.0.1:{port}/erp")
        harness = make_harness(
            tmp_path,
            monkeypatch,
            source_url=source_url,
            cache_url=cache_url,
            tables=[ORDERS],
            connection={
                "connect_timeout": "2s",
                "retries": {"max_retries": 1, "delay": "0.2s", "jitter": False},
            },
        )
        with _pools_instance(harness) as instance:
            result = harness.sync("orders", "mass")
            pool = instance.event_log_storage.get_concurrency_info("sync/orders")
            messages = _messages(harness, result.run_id)

    assert not result.success
    assert len(_events(result, "STEP_UP_FOR_RETRY")) == 1, "transient: retried per the connection's retries"
    expected = (
        f"connect phase: source connection 'src' (postgresql+psycopg://erp_reader@127.0.0.1:{port}/erp)"
    )
    assert f"table 'orders' (mass): {expected}: ConnectionTimeout" in failure_message(result)
    log = sync_log_rows(cache_url, "orders")
    assert [r["status"] for r in log] == ["failed", "failed"], "no attempt is left running"
    assert all(r["error"].startswith(expected) for r in log)
    assert pool.slot_count == 1 and not pool.claimed_slots and not pool.pending_steps, "the slot is free"
    # "will be retried" only where the RetryPolicy does retry.
    assert any("(attempt 1 of 2): transient, will be retried" in m for m in messages)
    assert any("(attempt 2): transient, not retried (max_retries: 1)" in m for m in messages)
    assert not any("attempt 2" in m and "will be retried" in m for m in messages)


@pytest.mark.parametrize(
    ("cache_kind", "phase"),
    [("sqlite", "read"), ("postgresql", "copy")],
    ids=["adbc-reader", "source-side-of-a-copy"],
)
def test_the_fast_paths_own_connections_time_out_too(tmp_path, monkeypatch, make_database, cache_kind, phase):
    """The ADBC reader (PostgreSQL source, other cache) and the psycopg2 source side of a server
    copy (PostgreSQL on both ends) open their own connections, with the catalog's timeout: the
    proxy forwards the sync's first connection and leaves every later one unanswered."""
    source_url, cache_url = make_database("postgresql"), make_database(cache_kind)
    create_source(source_url, [order_row(i) for i in range(1, 51)])
    proxy = FlakyProxy(source_url, drops=0, answered=1)
    try:
        harness = make_harness(
            tmp_path,
            monkeypatch,
            source_url=proxy.url,
            cache_url=cache_url,
            tables=[ORDERS],
            connection={"connect_timeout": "2s", "retries": {"max_retries": 0}},
        )
        result = harness.sync("orders", "mass")
    finally:
        proxy.close()
    assert not result.success
    message = failure_message(result)
    assert f"{phase} phase" in message and "timeout expired" in message, message
    assert proxy.accepted == 2, "the sync's own connection, then the fast path's"
    (attempt,) = sync_log_rows(cache_url, "orders")
    assert attempt["status"] == "failed" and f"{phase} phase" in attempt["error"]


def test_libpq_gets_the_catalog_timeouts_unless_the_url_sets_its_own():
    timeouts = Timeouts(connect=12.5, keepalive=45)
    options = PG.engine_options(
        sa.make_url("postgresql+psycopg://u@erp/jde"), role="source", timeouts=timeouts
    )
    assert options == {
        "connect_args": {
            "application_name": "sync_assets source",
            "connect_timeout": 13,
            "keepalives": 1,
            "keepalives_idle": 45,
            "keepalives_interval": 45,
            "keepalives_count": 3,
        }
    }
    own = sa.make_url("postgresql+psycopg://u@erp/jde?connect_timeout=5&keepalives=0")
    args = PG.engine_options(own, role="cache", timeouts=timeouts)["connect_args"]
    assert "connect_timeout" not in args and "keepalives" not in args, "the URL's own settings win"


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql"])
def test_a_psycopg2_source_url_takes_the_fast_paths_too(tmp_path, monkeypatch, make_database, cache_kind):
    """The ADBC reader (into SQLite) and the server copy (into PostgreSQL) open connections of
    their own with the timeouts of the sync's connection, whichever driver that one uses."""
    source_url, cache_url = make_database("postgresql"), make_database(cache_kind)
    create_source(source_url, [order_row(i) for i in range(1, 101)])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url.set(drivername="postgresql+psycopg2"),
        cache_url=cache_url,
        tables=[ORDERS],
        connection={"connect_timeout": "7s"},
    )
    result = harness.sync("orders", "mass")
    assert result.success, failure_message(result)
    assert read_rows(cache_url, "orders") == read_rows(source_url, "orders")


def test_connection_names_in_messages_show_no_query_secrets(tmp_path, monkeypatch, make_database):
    """A driver option in the URL's query can be a secret (`sslpassword`, an ODBC `PWD=` inside
    `odbc_connect`): the connection is named by driver, user, host, port and database only."""
    cache_url = make_database("sqlite")
    secret = "Query-Secret-77f1"
    port = free_port()
    refused = f"postgresql+psycopg://reader@127.0.0.1:{port}/erp?sslpassword={secret}"
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=cache_url,
        cache_url=cache_url,
        tables=[ORDERS],
        connection={"retries": {"max_retries": 0}},
    )
    monkeypatch.setenv("SYNC_TEST_SOURCE_URL", refused)
    result = harness.sync("orders", "mass")
    message = failure_message(result)
    assert f"source connection 'src' (postgresql+psycopg://reader@127.0.0.1:{port}/erp)" in message
    (row,) = sync_log_rows(cache_url, "orders")
    assert secret not in message and secret not in row["error"]
    assert not any(secret in (e.user_message or "") for e in harness.instance.all_logs(result.run_id))
