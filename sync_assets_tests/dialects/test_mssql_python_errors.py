"""mssql-python's errors carry no SQLSTATE or native number, only their class and the text of the
driver's own SQLSTATE table: retries are decided from that, with the real driver (no server)."""

from __future__ import annotations

import socket

import mssql_python
import pytest
import sqlalchemy as sa
from mssql_python.exceptions import sqlstate_to_exception

from sync_assets.dialects.mssql import DIALECT, mssql_python_state


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_transient_raw_and_through_sqlalchemy():
    port = _closed_port()
    with pytest.raises(mssql_python.OperationalError) as raw:
        mssql_python.connect(f"Server=tcp:127.0.0.1,{port};Database=x;UID=u;PWD=p;Encrypt=no", timeout=2)
    assert mssql_python_state(raw.value) == "08001"
    assert DIALECT.is_transient(raw.value) and not DIALECT.is_permanent(raw.value)

    url = sa.URL.create("mssql+mssqlpython", "u", "p", "127.0.0.1", port, "x", query={"Encrypt": "no"})
    engine = sa.create_engine(url, connect_args={"timeout": 2})
    with pytest.raises(sa.exc.OperationalError) as wrapped:
        engine.connect()
    engine.dispose()
    assert DIALECT.is_transient(wrapped.value)


@pytest.mark.parametrize(
    ("state", "transient", "permanent"),
    [
        ("08S01", True, False),  # communication link failure
        ("HYT00", True, False),  # timeout expired
        ("40001", True, False),  # deadlock victim
        ("28000", False, True),  # login failed: never retried
        ("42S02", False, False),  # invalid object name
    ],
)
def test_the_driver_s_own_errors_by_sqlstate(state, transient, permanent):
    error = sqlstate_to_exception(state, "[Microsoft][ODBC Driver 18 for SQL Server][SQL Server]...")
    assert (DIALECT.is_transient(error), DIALECT.is_permanent(error)) == (transient, permanent)


def test_other_drivers_errors_are_not_read_as_mssql_python_s():
    assert mssql_python_state(ValueError("Client unable to establish connection")) is None
