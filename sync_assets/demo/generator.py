"""Deterministic demo source: items, work orders, an item ledger and lots in one SQLite file.

Generated on first use (the demo connection has `demo: true`), identical on every machine.
"""

from __future__ import annotations

import fcntl
import os
import random
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

SEED = 20260101
ITEMS, WORK_ORDERS, LEDGER_ENTRIES, LOTS = 2_000, 5_000, 20_000, 3_000
EPOCH = datetime(2026, 1, 1, 6, 0, 0)
_TS = "%Y-%m-%d %H:%M:%S.%f"

_DDL = """
CREATE TABLE items (
    item_id         INTEGER PRIMARY KEY,
    item_number     VARCHAR(25) NOT NULL,
    description     VARCHAR(60),
    unit_of_measure CHAR(2),
    unit_cost       NUMERIC(15, 4),
    stocking_type   CHAR(1),
    last_update_dt  TIMESTAMP NOT NULL
);
CREATE INDEX ix_items_last_update_dt ON items (last_update_dt);
CREATE TABLE work_orders (
    "WADOCO"        BIGINT PRIMARY KEY,
    doc_type        CHAR(2) NOT NULL,
    branch          VARCHAR(12) NOT NULL,
    item_number     VARCHAR(25) NOT NULL,
    description     VARCHAR(60),
    qty_ordered     NUMERIC(15, 4),
    qty_completed   NUMERIC(15, 4),
    status_code     VARCHAR(3),
    priority        SMALLINT,
    requested_date  DATE,
    completed_date  DATE,
    remark          TEXT,
    last_update_dt  TIMESTAMP NOT NULL
);
CREATE INDEX ix_work_orders_last_update_dt ON work_orders (last_update_dt);
CREATE TABLE item_ledger (
    ledger_id        BIGINT PRIMARY KEY,
    item_number      VARCHAR(25) NOT NULL,
    branch           VARCHAR(12) NOT NULL,
    doc_type         CHAR(2) NOT NULL,
    doc_number       BIGINT,
    quantity         NUMERIC(15, 4),
    unit_cost        NUMERIC(15, 4),
    transaction_date DATE,
    lot_number       VARCHAR(30),
    last_update_dt   TIMESTAMP NOT NULL
);
CREATE INDEX ix_item_ledger_last_update_dt ON item_ledger (last_update_dt);
CREATE TABLE lots (
    lot_number  VARCHAR(30) PRIMARY KEY,
    item_number VARCHAR(25) NOT NULL,
    branch      VARCHAR(12) NOT NULL,
    lot_status  CHAR(1),
    expiry_date DATE,
    created_at  TIMESTAMP
);
"""

_ADJECTIVES = ["HEAVY DUTY", "STANDARD", "PRECISION", "COATED", "MACHINED", "FORGED", "WELDED", "SPARE"]
_MATERIALS = ["STEEL", "BRASS", "ALUMINUM", "PVC", "COPPER", "NYLON", "CAST IRON"]
_PARTS = ["BRACKET", "VALVE", "HOUSING", "FLANGE", "GASKET", "SHAFT", "BEARING", "BUSHING"]
_REMARKS = [
    "Rework required after QA inspection",
    "Expedite: customer line down",
    "Material substituted per ECN",
    "Prüfung bestanden — Los freigegeben",
    "Partial completion, remainder backordered",
    "出荷待ち (awaiting shipment) 📦",
]


def _money(rng: random.Random, high: float) -> str:
    return f"{rng.uniform(0, high):.4f}"


def _ts(value: datetime) -> str:
    return value.strftime(_TS)


def generate(path: Path) -> None:
    """Write the demo tables into a new SQLite file at `path`."""
    rng = random.Random(SEED)
    branches = [f"{'M' + str(10 + i):>12}" for i in range(12)]
    items = [f"IT-{i:06d}" for i in range(1, ITEMS + 1)]
    with sqlite3.connect(path) as db:
        db.executescript(_DDL)
        db.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    i,
                    items[i - 1],
                    f"{rng.choice(_ADJECTIVES)} {rng.choice(_MATERIALS)} {rng.choice(_PARTS)}",
                    rng.choice(["EA", "KG", "M ", "BX"]),
                    _money(rng, 500),
                    rng.choice("PSM"),
                    _ts(EPOCH - timedelta(minutes=rng.randrange(0, 60 * 24 * 300))),
                )
                for i in range(1, ITEMS + 1)
            ],
        )
        lot_numbers = [f"LOT{i:07d}" for i in range(1, LOTS + 1)]
        db.executemany(
            "INSERT INTO lots VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    lot,
                    rng.choice(items),
                    rng.choice(branches),
                    rng.choice(" HQ"),
                    (date(2026, 6, 1) + timedelta(days=rng.randrange(0, 900))).isoformat(),
                    _ts(EPOCH - timedelta(minutes=rng.randrange(0, 60 * 24 * 400))),
                )
                for lot in lot_numbers
            ],
        )
        orders = []
        for n in range(1, WORK_ORDERS + 1):
            requested = date(2025, 1, 1) + timedelta(days=rng.randrange(0, 365))
            ordered = rng.uniform(1, 1000)
            done = rng.random() < 0.6
            orders.append(
                (
                    100_000 + n,
                    rng.choice(["WO", "WM", "WR"]),
                    rng.choice(branches),
                    rng.choice(items),
                    f"{rng.choice(_ADJECTIVES)} {rng.choice(_PARTS)} {5 * rng.randrange(1, 40)}MM",
                    f"{ordered:.4f}",
                    f"{ordered * rng.random():.4f}" if done else None,
                    rng.choice(["10", "20", "30", "45", "90", "99"]),
                    rng.randrange(1, 6),
                    requested.isoformat(),
                    (requested + timedelta(days=rng.randrange(1, 60))).isoformat() if done else None,
                    rng.choice(_REMARKS) if rng.random() < 0.3 else None,
                    _ts(
                        EPOCH
                        - timedelta(seconds=rng.randrange(0, 86400 * 200), microseconds=rng.randrange(10**6))
                    ),
                )
            )
        db.executemany("INSERT INTO work_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", orders)
        db.executemany(
            "INSERT INTO item_ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    n,
                    rng.choice(items),
                    rng.choice(branches),
                    rng.choice(["IC", "IM", "IS", "OV"]),
                    100_000 + rng.randrange(1, WORK_ORDERS + 1),
                    f"{rng.uniform(-500, 500):.4f}",
                    _money(rng, 500),
                    (date(2025, 1, 1) + timedelta(days=rng.randrange(0, 365))).isoformat(),
                    rng.choice(lot_numbers) if rng.random() < 0.7 else None,
                    _ts(EPOCH - timedelta(seconds=rng.randrange(0, 86400 * 200))),
                )
                for n in range(1, LEDGER_ENTRIES + 1)
            ],
        )


def ensure_demo_source(url: sa.URL) -> None:
    """Create the demo source file on first use; concurrent first uses generate it once."""
    if url.get_backend_name() != "sqlite" or not url.database:
        msg = "`demo: true` needs a SQLite file URL"
        raise ValueError(msg)
    path = Path(url.database).expanduser()
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        generate(partial)
        os.replace(partial, path)


def simulate_changes(path: Path, *, fraction: float = 0.01, now: datetime | None = None) -> tuple[int, int]:
    """Update `fraction` of the work orders and add half as many new ones, as a busy ERP would."""
    stamp = _ts(now or datetime.now())
    rng = random.Random()
    with sqlite3.connect(path) as db:
        total, top = db.execute('SELECT count(*), max("WADOCO") FROM work_orders').fetchone()
        changed = max(1, int(total * fraction))
        ids = rng.sample(range(100_001, 100_001 + total), min(changed, total))
        db.executemany(
            "UPDATE work_orders SET qty_completed = qty_ordered, status_code = '99', last_update_dt = ? "
            'WHERE "WADOCO" = ?',
            [(stamp, i) for i in ids],
        )
        added = max(1, changed // 2)
        db.executemany(
            "INSERT INTO work_orders VALUES (?, 'WO', '         M10', 'IT-000001', 'NEW ORDER', "
            "'10.0000', NULL, '10', 3, ?, NULL, NULL, ?)",
            [(top + k, date.today().isoformat(), stamp) for k in range(1, added + 1)],
        )
    return len(ids), added
