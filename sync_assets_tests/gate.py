"""A PostgreSQL source whose read stops at a known row until the test lets it go on.

The view `orders_gated` reads `orders` through gate(id), which at row GATED_ROW waits for an
advisory lock the test holds. Read in 5,000-row fetches (GATED_TABLE, GATED_DEFAULTS), a sync has
staged exactly three batches when it waits there, however loaded the machine is: a signal sent
then certainly lands mid-read.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from sync_assets_tests.helpers import ORDERS, create_source, materialize_cli, order_row, wait_until

GATE = 4242  # the advisory lock's key
GATED_ROW = 20_000
LAST_ID = 60_000  # the last row grow_gated_source adds
# Fetches of batch_size rows, staged batch by batch, into a PostgreSQL cache too (no server-to-server COPY).
GATED_TABLE = {**ORDERS, "source_table": "orders_gated", "arrow_read": False, "direct_copy": False}
GATED_DEFAULTS = {"batch_size": 5000}
STAGED_AT_THE_GATE = 3  # batches staged when the read waits: rows 1-15,000


def create_gated_source(url: sa.URL) -> None:
    """`orders` with rows 1 to 500 (order_row), and the view `orders_gated` over it."""
    create_source(url, [order_row(i) for i in range(1, 501)])
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE FUNCTION gate(i bigint) RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN "
                f"IF i = {GATED_ROW} THEN PERFORM pg_advisory_lock_shared({GATE}); "
                f"PERFORM pg_advisory_unlock_shared({GATE}); END IF; RETURN i; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE VIEW orders_gated AS SELECT gate(id) AS id, code, name, amount, big_amount, ratio, qty, "
                "active, due, note, payload, updated_at FROM orders"
            )
        )
    engine.dispose()


def grow_gated_source(url: sa.URL, *, last_id: int = LAST_ID) -> None:
    """Append generated rows 501 to `last_id` (inside PostgreSQL), so that a read reaches the gate."""
    assert last_id > GATED_ROW
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (id, code, amount, qty, updated_at) SELECT i, 'G', i / 100.0, i % 7, "
                "timestamp '2026-04-01' + i * interval '1 second' FROM generate_series(501, :last) i"
            ),
            {"last": last_id},
        )
    engine.dispose()


class Gate:
    """The advisory lock the gated view waits on, held by a session of the test's own.

    `with Gate(url) as gate:` holds it until the block ends, or until `gate.release()`.
    """

    def __init__(self, url: sa.URL) -> None:
        self._engine = sa.create_engine(url, poolclass=sa.pool.NullPool)  # closing ends the session
        self._holder: sa.Connection | None = None

    def __enter__(self) -> Gate:
        self._holder = self._engine.connect()
        self._holder.execute(sa.text("SELECT pg_advisory_lock(:gate)"), {"gate": GATE})
        return self

    def release(self) -> None:
        """Let the waiting read go on (the session ends, and its lock with it)."""
        if self._holder is not None:
            self._holder.close()
            self._holder = None

    def __exit__(self, *_exc: object) -> None:
        self.release()
        self._engine.dispose()

    def waited_on(self) -> bool:
        """A read of this database waits at the gate (advisory locks are per database)."""
        with self._engine.connect() as conn:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :gate AND NOT granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"gate": GATE},
            ).scalar_one()
        return waiting > 0


def staged_batches(home: Path, run_id: str) -> int:
    """How many batches the run's sync has reported staged or loaded (its "rows read and ..." logs)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return sum(
            any(said in e.user_message for said in ("rows read and staged", "rows read and loaded"))
            for e in instance.all_logs(run_id)
        )


def materialize_to_the_gate(catalog: Path, home: Path, gate: Gate, output: Path) -> subprocess.Popen[str]:
    """`dagster asset materialize` of src/orders (mass) in a session of its own, printing to
    `output`; returns once its read waits at the (held) gate, three batches staged."""
    with output.open("w") as out:
        process = materialize_cli(catalog, home, select="src/orders", stdout=out, start_new_session=True)
    wait_until(lambda: gate.waited_on() or process.poll() is not None, "the sync to reach the gate")
    assert process.poll() is None, (
        "the CLI ended before the sync reached the gate:\n" + output.read_text()[-3000:]
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.STARTED]
    assert staged_batches(home, run.run_id) == STAGED_AT_THE_GATE, "15,000 rows staged, the 4th batch waits"
    return process
