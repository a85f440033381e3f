"""Deterministic demo source: JDE item master, work orders, item ledger and lots in one SQLite file.

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

# JDE's own layout: Julian dates (CYYDDD) and HHMMSS times as numbers, amounts as integers with
# implied decimals, text in space-padded CHAR columns (SQLite does not pad: the generator does).
_DDL = """
CREATE TABLE F4101 (
    IMITM   NUMERIC(8, 0) PRIMARY KEY,
    IMLITM  CHAR(25) NOT NULL,
    IMDSC1  CHAR(30),
    IMUOM1  CHAR(2),
    IMSTKT  CHAR(1),
    IMUPMJ  NUMERIC(6, 0) NOT NULL,
    IMTDAY  NUMERIC(6, 0) NOT NULL
);
CREATE INDEX F4101_UPMJ ON F4101 (IMUPMJ);
CREATE TABLE F4801 (
    WADOCO  NUMERIC(8, 0) PRIMARY KEY,
    WADCTO  CHAR(2) NOT NULL,
    WAMCU   CHAR(12) NOT NULL,
    WAITM   NUMERIC(8, 0) NOT NULL,
    WALITM  CHAR(25) NOT NULL,
    WADL01  CHAR(30),
    WAUORG  NUMERIC(15, 0),
    WASOQS  NUMERIC(15, 0),
    WASRST  CHAR(2),
    WAPRTS  CHAR(1),
    WATRDJ  NUMERIC(6, 0),
    WASTRT  NUMERIC(6, 0),
    WADRQJ  NUMERIC(6, 0),
    WASTRX  NUMERIC(6, 0),
    WAUPMJ  NUMERIC(6, 0) NOT NULL,
    WATDAY  NUMERIC(6, 0) NOT NULL
);
CREATE INDEX F4801_UPMJ ON F4801 (WAUPMJ);
CREATE TABLE F4111 (
    ILUKID  NUMERIC(15, 0) PRIMARY KEY,
    ILITM   NUMERIC(8, 0) NOT NULL,
    ILLITM  CHAR(25) NOT NULL,
    ILMCU   CHAR(12) NOT NULL,
    ILDCT   CHAR(2) NOT NULL,
    ILDOC   NUMERIC(8, 0),
    ILLOTN  CHAR(30),
    ILTRQT  NUMERIC(15, 0),
    ILUNCS  NUMERIC(15, 0),
    ILTRDJ  NUMERIC(6, 0),
    ILUPMJ  NUMERIC(6, 0) NOT NULL,
    ILTDAY  NUMERIC(6, 0) NOT NULL
);
CREATE INDEX F4111_UPMJ ON F4111 (ILUPMJ);
CREATE TABLE F4108 (
    IOLOTN  CHAR(30) PRIMARY KEY,
    IOITM   NUMERIC(8, 0) NOT NULL,
    IOLITM  CHAR(25) NOT NULL,
    IOMCU   CHAR(12) NOT NULL,
    IOLOTS  CHAR(1),
    IOMMEJ  NUMERIC(6, 0),
    IOOHDJ  NUMERIC(6, 0)
);
"""

_ADJECTIVES = ["HEAVY DUTY", "STANDARD", "PRECISION", "COATED", "MACHINED", "FORGED", "WELDED", "SPARE"]
_MATERIALS = ["STEEL", "BRASS", "ALUMINUM", "PVC", "COPPER", "NYLON", "CAST IRON"]
_PARTS = ["BRACKET", "VALVE", "HOUSING", "FLANGE", "GASKET", "SHAFT", "BEARING", "BUSHING"]
_REMARKS = ["Prüfung bestanden — Los", "出荷待ち 📦", "Rework after QA", "Expedite: line down"]


def julian(day: date) -> int:
    """CYYDDD, as JDE stores dates."""
    return (day.year - 1900) * 1000 + day.timetuple().tm_yday


def hhmmss(moment: datetime) -> int:
    return moment.hour * 10000 + moment.minute * 100 + moment.second


def _char(value: str, width: int) -> str:
    return value.ljust(width)


def _mcu(value: str) -> str:
    """Business units are right-justified in JDE."""
    return value.rjust(12)


def _stamp(moment: datetime) -> tuple[int, int]:
    return julian(moment.date()), hhmmss(moment)


def generate(path: Path) -> None:
    """Write the demo JDE tables into a new SQLite file at `path`."""
    rng = random.Random(SEED)
    branches = [_mcu(f"M{10 + i}") for i in range(12)]
    items = [(i, _char(f"IT-{i:06d}", 25)) for i in range(1, ITEMS + 1)]
    with sqlite3.connect(path) as db:
        db.executescript(_DDL)
        db.executemany(
            "INSERT INTO F4101 VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    short,
                    long,
                    _char(f"{rng.choice(_ADJECTIVES)} {rng.choice(_MATERIALS)} {rng.choice(_PARTS)}", 30),
                    rng.choice(["EA", "KG", "M ", "BX"]),
                    rng.choice("PSM"),
                    *_stamp(EPOCH - timedelta(minutes=rng.randrange(0, 60 * 24 * 300))),
                )
                for short, long in items
            ],
        )
        lot_numbers = [_char(f"LOT{i:07d}", 30) for i in range(1, LOTS + 1)]
        lots = []
        for lot in lot_numbers:
            short, long = rng.choice(items)
            lots.append(
                (
                    lot,
                    short,
                    long,
                    rng.choice(branches),
                    rng.choice(" HQ"),
                    julian(date(2026, 6, 1) + timedelta(days=rng.randrange(0, 900))),
                    julian((EPOCH - timedelta(minutes=rng.randrange(0, 60 * 24 * 400))).date()),
                )
            )
        db.executemany("INSERT INTO F4108 VALUES (?, ?, ?, ?, ?, ?, ?)", lots)
        orders = []
        for n in range(1, WORK_ORDERS + 1):
            ordered = date(2025, 1, 1) + timedelta(days=rng.randrange(0, 365))
            quantity = rng.randrange(100, 100_000)
            done = rng.random() < 0.6
            short, long = rng.choice(items)
            orders.append(
                (
                    100_000 + n,
                    rng.choice(["WO", "WM", "WR"]),
                    rng.choice(branches),
                    short,
                    long,
                    _char(rng.choice(_REMARKS) if rng.random() < 0.3 else f"{rng.choice(_PARTS)} {n}", 30),
                    quantity,
                    int(quantity * rng.random()) if done else 0,
                    rng.choice(["10", "20", "30", "45", "90", "99"]),
                    str(rng.randrange(1, 6)),
                    julian(ordered),
                    julian(ordered + timedelta(days=rng.randrange(0, 10))),
                    julian(ordered + timedelta(days=rng.randrange(10, 40))),
                    julian(ordered + timedelta(days=rng.randrange(1, 60))) if done else 0,
                    *_stamp(EPOCH - timedelta(seconds=rng.randrange(0, 86400 * 200))),
                )
            )
        db.executemany(f"INSERT INTO F4801 VALUES ({', '.join('?' * 16)})", orders)
        ledger = []
        for n in range(1, LEDGER_ENTRIES + 1):
            short, long = rng.choice(items)
            ledger.append(
                (
                    n,
                    short,
                    long,
                    rng.choice(branches),
                    rng.choice(["IC", "IM", "IS", "OV"]),
                    100_000 + rng.randrange(1, WORK_ORDERS + 1),
                    rng.choice(lot_numbers) if rng.random() < 0.7 else _char("", 30),
                    rng.randrange(-50_000, 50_000),
                    rng.randrange(0, 5_000_000),
                    julian(date(2025, 1, 1) + timedelta(days=rng.randrange(0, 365))),
                    *_stamp(EPOCH - timedelta(seconds=rng.randrange(0, 86400 * 200))),
                )
            )
        db.executemany(f"INSERT INTO F4111 VALUES ({', '.join('?' * 12)})", ledger)


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
    """Complete `fraction` of the work orders and add half as many new ones, as JDE would: each
    touched row gets today's Julian date in WAUPMJ and the time of day in WATDAY."""
    moment = now or datetime.now()
    day, clock = _stamp(moment)
    rng = random.Random()
    with sqlite3.connect(path) as db:
        total, top = db.execute("SELECT count(*), max(WADOCO) FROM F4801").fetchone()
        changed = max(1, int(total * fraction))
        ids = rng.sample(range(100_001, 100_001 + total), min(changed, total))
        db.executemany(
            "UPDATE F4801 SET WASOQS = WAUORG, WASRST = '99', WASTRX = ?, WAUPMJ = ?, WATDAY = ? "
            "WHERE WADOCO = ?",
            [(day, day, clock, i) for i in ids],
        )
        added = max(1, changed // 2)
        db.executemany(
            "INSERT INTO F4801 VALUES (?, 'WO', ?, 1, ?, ?, 1000, 0, '10', '3', ?, ?, ?, 0, ?, ?)",
            [
                (
                    top + k,
                    _mcu("M10"),
                    _char("IT-000001", 25),
                    _char("NEW ORDER", 30),
                    day,
                    day,
                    day,
                    day,
                    clock,
                )
                for k in range(1, added + 1)
            ],
        )
    return len(ids), added
