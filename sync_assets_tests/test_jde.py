"""JDE conventions: Julian dates, HHMMSS times, implied decimals, padded text, and the composite watermark."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Context, Decimal
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql, oracle, sqlite

from sync_assets.catalog.loader import load_catalog
from sync_assets.errors import CatalogError, DataError
from sync_assets.sources import jde
from sync_assets.sync.watermark import encode
from sync_assets_tests.helpers import failure_message, make_harness, materialization, sync_log_rows


# -- pure functions ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cyyddd", "expected"),
    [
        (1, date(1900, 1, 1)),
        (100060, date(2000, 2, 29)),
        (124366, date(2024, 12, 31)),  # day 366 of a leap year
        (126032, date(2026, 2, 1)),
        (8099365, date(9999, 12, 31)),  # C = 80: the century digit is not limited to 0..1
    ],
)
def test_julian_round_trip(cyyddd, expected):
    assert jde.from_julian(cyyddd) == expected
    assert jde.to_julian(expected) == cyyddd
    assert pl.select(jde.julian_date(pl.lit(cyyddd, dtype=pl.Int64))).item() == expected


def test_julian_zero_and_null_are_no_date():
    frame = pl.DataFrame({"d": [0, None, 126032]}, schema={"d": pl.Int64})
    assert frame.select(jde.julian_date(pl.col("d"))).to_series().to_list() == [None, None, date(2026, 2, 1)]
    assert jde.from_julian(0) is None and jde.from_julian(None) is None


def test_timestamps_of_date_and_time():
    frame = pl.DataFrame(
        {"d": [126032, 126032, 126032, 0, 126032], "t": [0, 235959, 10203, 120000, None]},
        schema={"d": pl.Int64, "t": pl.Int64},
    )
    got = frame.select(jde.jde_timestamp(pl.col("d"), pl.col("t"))).to_series().to_list()
    assert got == [
        datetime(2026, 2, 1),
        datetime(2026, 2, 1, 23, 59, 59),
        datetime(2026, 2, 1, 1, 2, 3),
        None,  # no date, no timestamp
        datetime(2026, 2, 1),  # a missing time is midnight
    ]
    assert jde.from_jde(126032, 235959) == datetime(2026, 2, 1, 23, 59, 59)
    assert jde.to_hhmmss(datetime(2026, 2, 1, 23, 59, 59)) == 235959


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (pl.Int64, [12345, -5, -12345, 0, None, 9_223_372_036_854_775_807]),
        (
            pl.Decimal(31, 0),
            [Decimal(12345), Decimal(-5), Decimal(-12345), Decimal(0), None, Decimal("9" * 31)],
        ),
        (pl.String, ["12345", "-5", " -12345 ", "0", None, "-" + "9" * 31]),
    ],
)
def test_implied_decimals_are_exact(dtype, values):
    frame = pl.DataFrame({"x": values}, schema={"x": dtype})
    got = frame.select(jde.implied_decimal(pl.col("x"), dtype, 2, 31)).to_series()
    assert got.dtype == pl.Decimal(31, 2)
    wide = Context(prec=40)  # Python's default 28 digits would round the 31-digit values
    expected = [None if v is None else Decimal(str(v).strip()).scaleb(-2, wide) for v in values]
    assert got.to_list() == expected
    assert got[0] == Decimal("123.45") and got[1] == Decimal("-0.05")


def test_implied_decimals_from_floats_and_scaled_decimals_refuse_fractions():
    floats = pl.DataFrame({"x": [12345.0, 1.5]})
    assert floats.select(jde.implied_decimal(pl.col("x"), pl.Float64, 2, 15)).to_series().to_list() == [
        Decimal("123.45"),
        None,
    ]
    scaled = pl.DataFrame({"x": [Decimal("7.0"), Decimal("1.5")]}, schema={"x": pl.Decimal(10, 1)})
    assert scaled.select(
        jde.implied_decimal(pl.col("x"), pl.Decimal(10, 1), 3, 10)
    ).to_series().to_list() == [
        Decimal("0.007"),
        None,
    ]


def test_transform_refuses_values_jde_never_writes():
    transform = jde.Transform(
        "wo",
        julian_dates=("d",),
        timestamps=(jde.Timestamp("at", "d", "t"),),
        decimals=(jde.Decimals("q", 2, 5),),
        trim=("s",),
    )
    good = pl.DataFrame({"d": [126032, 0], "t": [235959, 0], "q": [99999, -1], "s": ["M10  ", "  A "]})
    out = transform.apply(good)
    assert out.columns == ["d", "t", "q", "s", "at"]
    assert out.row(0) == (
        date(2026, 2, 1),
        235959,
        Decimal("999.99"),
        "M10",
        datetime(2026, 2, 1, 23, 59, 59),
    )
    assert out.row(1) == (None, 0, Decimal("-0.01"), "  A", None)
    cases = [
        ({"d": [125366]}, "column 'd': source value 125366 is not a CYYDDD date"),  # 2025 has 365 days
        ({"d": [126000]}, "column 'd': source value 126000 is not a CYYDDD date"),
        ({"t": [126000]}, "column 't': source value 126000 is not an HHMMSS time"),
        ({"t": [240000]}, "column 't': source value 240000 is not an HHMMSS time"),
        ({"q": [100000]}, "column 'q': source value 100000 is not an integer"),  # 6 digits > precision 5
        # Not whole numbers at all: refused, never turned into NULL dates or midnight.
        ({"d": ["12603X"]}, "column 'd': source value '12603X' is not a CYYDDD date"),
        ({"t": [120000.5]}, "column 't': source value 120000.5 is not an HHMMSS time"),
    ]
    for change, message in cases:
        bad = good.head(1).with_columns(pl.Series(k, v) for k, v in change.items())
        with pytest.raises(DataError, match=message):
            transform.apply(bad)


# -- the composite watermark in SQL --------------------------------------------------------------
F4801 = sa.table("F4801", sa.column("WAUPMJ"), sa.column("WATDAY"))
LOW = datetime(2026, 2, 1, 13, 5, 9)


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (
            oracle.dialect(),
            '"F4801"."WAUPMJ" >= :wm_low_day AND ("F4801"."WAUPMJ" > :wm_low_day '
            'OR coalesce("F4801"."WATDAY", 0) >= :wm_low_time)',
        ),
        (
            mssql.dialect(),
            "[F4801].[WAUPMJ] >= :wm_low_day AND ([F4801].[WAUPMJ] > :wm_low_day "
            "OR coalesce([F4801].[WATDAY], 0) >= :wm_low_time)",
        ),
        (
            sqlite.dialect(),
            '"F4801"."WAUPMJ" >= ? AND ("F4801"."WAUPMJ" > ? OR coalesce("F4801"."WATDAY", 0) >= ?)',
        ),
    ],
    ids=["oracle", "mssql", "sqlite"],
)
def test_lower_bound_leads_with_a_date_range(dialect, expected):
    compiled = jde.watermark_bound(F4801.c.WAUPMJ, F4801.c.WATDAY, ">=", LOW).compile(dialect=dialect)
    assert str(compiled) == expected
    assert compiled.params == {"wm_low_day": 126032, "wm_low_time": 130509}


def test_upper_bounds_mirror_it_and_fractions_round_to_whole_seconds():
    high = jde.watermark_bound(F4801.c.WAUPMJ, F4801.c.WATDAY, "<=", LOW).compile(dialect=oracle.dialect())
    assert str(high) == (
        '"F4801"."WAUPMJ" <= :wm_high_day AND ("F4801"."WAUPMJ" < :wm_high_day '
        'OR coalesce("F4801"."WATDAY", 0) <= :wm_high_time)'
    )
    below = jde.watermark_bound(F4801.c.WAUPMJ, F4801.c.WATDAY, "<", LOW).compile(dialect=oracle.dialect())
    assert str(below).endswith('coalesce("F4801"."WATDAY", 0) < :wm_below_time)')
    fraction = LOW + timedelta(microseconds=5)
    low = jde.watermark_bound(F4801.c.WAUPMJ, F4801.c.WATDAY, ">=", fraction).compile()
    assert low.params == {"wm_low_day": 126032, "wm_low_time": 130510}  # rounds up
    below = jde.watermark_bound(F4801.c.WAUPMJ, F4801.c.WATDAY, "<", fraction).compile()
    assert "<= :wm_below_time" in str(below) and below.params["wm_below_time"] == 130509
    only_date = jde.watermark_bound(F4801.c.WAUPMJ, None, ">=", date(2026, 2, 1)).compile()
    assert str(only_date) == '"F4801"."WAUPMJ" >= :wm_low_day' and only_date.params == {"wm_low_day": 126032}


def test_max_watermark_reads_the_date_index_first():
    statement = jde.max_watermark(F4801, F4801.c.WAUPMJ, F4801.c.WATDAY).compile(dialect=oracle.dialect())
    assert " ".join(str(statement).split()) == (
        'SELECT "F4801"."WAUPMJ", max(coalesce("F4801"."WATDAY", 0)) AS max_1 FROM "F4801" '
        'WHERE "F4801"."WAUPMJ" = (SELECT max("F4801"."WAUPMJ") AS max_2 FROM "F4801") '
        'GROUP BY "F4801"."WAUPMJ"'
    )


# -- the catalog ---------------------------------------------------------------------------------
CATALOG = """\
connections:
  jde: {url: "sqlite:///src.sqlite"}
  cache: {url: "sqlite:///cache.sqlite"}
cache: cache
tables:
  - name: work_orders
    source: jde
    source_table: F4801
    primary_key: [order_id]
    updated_at: updated_at
    columns: {WADOCO: order_id}
    jde:
      julian_dates: [WATRDJ, WAUPMJ]
      times: {updated_at: [WAUPMJ, WATDAY]}
      implied_decimals: {WAUORG: 2}
      trim: true
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("julian_dates: [WATRDJ, WAUPMJ]", "julian_dates: [WATRDJ, WAUPMJ, WAUORG]"),
            ":12: table 'work_orders': jde: column 'WAUORG' cannot be both a Julian date and an implied decimal",
        ),
        (
            ("[WAUPMJ, WATDAY]", "[WAUPMJ]"),
            ":12: table 'work_orders': jde: `times.updated_at` needs both source columns",
        ),
        (
            ("[WAUPMJ, WATDAY]", "[WAUPMJ, WAUPMJ]"),
            ":12: table 'work_orders': jde: `times.updated_at` needs two different columns",
        ),
        (
            ("trim: true", "trim: [WATDAY]"),
            ":12: table 'work_orders': jde: column 'WATDAY' is numeric in JDE; it cannot also be trimmed",
        ),
        (
            ("{WADOCO: order_id}", "{WADOCO: order_id, WATDAY: updated_at}"),
            ":6: table 'work_orders': `jde.times` column 'updated_at' is also the target of a `columns` rename",
        ),
        (("trim: true", "trim: yes please"), ":16: table 'work_orders': jde.trim.bool: Input should be"),
    ],
)
def test_catalog_errors_name_file_line_and_column(tmp_path, change, message):
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG.replace(*change))
    with pytest.raises(CatalogError) as raised:
        load_catalog(path)
    assert f"{path}{message}" in str(raised.value)


def test_demo_catalog_loads_with_jde_options():
    catalog = load_catalog()
    work_orders = catalog.table("work_orders")
    assert work_orders.source_table == "F4801" and work_orders.jde is not None
    assert work_orders.jde.times == {"updated_at": ["WAUPMJ", "WATDAY"]}
    assert catalog.table("lots").updated_at is None


# -- end to end ----------------------------------------------------------------------------------
def _source_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "F4801",
        metadata,
        sa.Column("WADOCO", sa.Numeric(8, 0), primary_key=True),
        sa.Column("WAMCU", sa.CHAR(12)),
        sa.Column("WALITM", sa.CHAR(25)),
        sa.Column("WAUORG", sa.Numeric(15, 0)),
        sa.Column("WATRDJ", sa.Numeric(6, 0)),
        sa.Column("WAUPMJ", sa.Numeric(6, 0), index=True),
        sa.Column("WATDAY", sa.Numeric(6, 0)),
    )


FIRST_DAY = 126032  # 2026-02-01


def _create_f4801(url: sa.URL, rows: list[dict[str, Any]]) -> sa.Table:
    """The JDE work order table in a source database, holding `rows`."""
    engine = sa.create_engine(url)
    table = _source_table(sa.MetaData())
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    engine.dispose()
    return table


def _row(
    i: int, *, day: int | None = None, hhmmss: int | None = None, qty: int | None = None
) -> dict[str, Any]:
    minutes = 8 * 60 + (i - 1) % 80 * 7  # 08:00, 08:07, ... 17:13
    return {
        "WADOCO": i,
        "WAMCU": f"M{i % 7}".rjust(12),
        "WALITM": f"IT-{i:04d}".ljust(25),
        "WAUORG": None if i % 9 == 0 else (qty if qty is not None else (i * 1234 - 50_000)),
        "WATRDJ": 0 if i % 10 == 0 else 125100 + i,
        "WAUPMJ": day if day is not None else FIRST_DAY + (i - 1) // 80,
        "WATDAY": hhmmss if hhmmss is not None else minutes // 60 * 10000 + minutes % 60 * 100,
    }


def _expected(row: dict[str, Any]) -> tuple[Any, ...]:
    """The cache row, computed independently of sync/jde.py."""

    def day(v: int) -> date | None:
        return None if v == 0 else date(1900 + v // 1000, 1, 1) + timedelta(days=v % 1000 - 1)

    t = row["WATDAY"]
    updated = day(row["WAUPMJ"])
    assert updated is not None
    return (
        row["WADOCO"],
        row["WAMCU"].rstrip(),
        row["WALITM"].rstrip(),
        None if row["WAUORG"] is None else Decimal(row["WAUORG"]) / 100,
        day(row["WATRDJ"]),
        updated,
        t,
        datetime(updated.year, updated.month, updated.day, t // 10000, t // 100 % 100, t % 100),
    )


def _cache_rows(url: sa.URL) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        table = sa.Table("work_orders", sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(table).order_by(table.c.order_id)).all()
    engine.dispose()

    def plain(v: Any) -> Any:
        if isinstance(v, Decimal | float) and not isinstance(v, bool):
            return Decimal(str(v))
        if isinstance(v, str) and len(v) >= 10 and v[4] == "-" and v[:4].isdigit():
            return datetime.fromisoformat(v) if len(v) > 10 else date.fromisoformat(v)
        return v

    return [tuple(plain(v) for v in row) for row in rows]


@pytest.mark.parametrize("cache_kind", ["sqlite", "postgresql", "duckdb"])
def test_jde_table_mass_then_daily(tmp_path, monkeypatch, make_database, cache_kind):
    source_url, cache_url = make_database("sqlite"), make_database(cache_kind)
    rows = {i: _row(i) for i in range(1, 241)}
    table = _create_f4801(source_url, list(rows.values()))
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[
            {
                "name": "work_orders",
                "source_table": "F4801",
                "primary_key": ["order_id"],
                "updated_at": "updated_at",
                "lookback": {"daily": "2h"},
                "verify": {"deep": True, "segment_rows": 64},
                "columns": {
                    "WADOCO": "order_id",
                    "WAMCU": "branch",
                    "WALITM": "item_number",
                    "WAUORG": "qty",
                    "WATRDJ": "order_date",
                    "WAUPMJ": "updated_date",
                    "WATDAY": "updated_time",
                },
                "jde": {
                    "julian_dates": ["WATRDJ", "WAUPMJ"],
                    "times": {"updated_at": ["WAUPMJ", "WATDAY"]},
                    "implied_decimals": {"WAUORG": 2},
                    "trim": True,
                },
            }
        ],
        defaults={"batch_size": 50},
    )

    result = harness.sync("work_orders", "mass")
    assert result.success, failure_message(result)
    assert _cache_rows(cache_url) == [_expected(rows[i]) for i in sorted(rows)]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(e.passed for e in checks.values()), {n: e.description for n, e in checks.items()}
    # Source rows transformed and compared with the cache in keyset-paged segments of 64 rows.
    assert checks["deep_reconciliation"].metadata["segments"].value == 4
    watermark = datetime(2026, 2, 3, 17, 13)  # row 240: the third day, 08:00 + 79 x 7 min
    assert materialization(result)["sync_assets/watermark_to"] == encode(watermark)

    # Low = 15:13 on the watermark's day: rows 223..240 are re-read, plus these changes.
    changes = {
        5: _row(5, day=126034, hhmmss=171400, qty=1),  # same Julian day as the watermark, later time
        10: _row(10, day=126034, hhmmss=161300, qty=2),  # late commit inside the lookback
        20: _row(20, day=126034, hhmmss=151300, qty=3),  # exactly at the lower bound
        15: _row(15, day=126034, hhmmss=121300, qty=4),  # late commit before the lookback: missed
        241: _row(241, day=126035, hhmmss=500),  # new, the next day at 00:05
    }
    engine = sa.create_engine(source_url)
    with engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.WADOCO.in_(list(changes))))
        conn.execute(table.insert(), list(changes.values()))
    engine.dispose()

    result = harness.sync("work_orders", "daily")
    assert result.success, failure_message(result)
    meta = materialization(result)
    assert meta["sync_assets/mode"] == "incremental"
    assert meta["sync_assets/rows_read"] == 18 + 4
    # Of the 21 keys re-read that the cache holds, only the three changes differ: the 18 others,
    # transformed again from the same JDE values, equal what the cache holds (issue 10).
    assert [meta[f"sync_assets/rows_{n}"] for n in ("inserted", "updated", "unchanged")] == [1, 3, 18]
    assert meta["sync_assets/watermark_from"] == encode(watermark - timedelta(hours=2))
    expected = {**rows, **{i: r for i, r in changes.items() if i != 15}}
    assert _cache_rows(cache_url) == [_expected(expected[i]) for i in sorted(expected)]
    log = sync_log_rows(cache_url, "work_orders")
    assert log[-1]["watermark_to"] == "2026-02-04 00:05:00.000000"
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(e.passed for e in checks.values()), {n: e.description for n, e in checks.items()}
    # The settled range of an incremental, bounded in CYYDDD/HHMMSS on the source side.
    assert checks["reconciliation"].metadata["source_rows"].value == 21


def test_unknown_jde_column_names_table_and_columns(tmp_path, monkeypatch, make_database):
    source_url, cache_url = make_database("sqlite"), make_database("sqlite")
    _create_f4801(source_url, [_row(1)])
    harness = make_harness(
        tmp_path,
        monkeypatch,
        source_url=source_url,
        cache_url=cache_url,
        tables=[
            {
                "name": "work_orders",
                "source_table": "F4801",
                "primary_key": ["WADOCO"],
                "updated_at": "updated_at",
                "jde": {"times": {"updated_at": ["WAUPMJ", "WATDAYX"]}},
            }
        ],
    )
    result = harness.sync("work_orders", "mass")
    assert not result.success
    assert (
        "table 'work_orders': jde times.updated_at column 'WATDAYX' is not in the source "
        "(columns: WADOCO, WALITM, WAMCU, WATDAY, WATRDJ, WAUORG, WAUPMJ)"
    ) in failure_message(result)


def test_date_only_watermark_below_a_time_of_day_keeps_that_day():
    day = sa.column("IMUPMJ")
    below = jde.watermark_bound(day, None, "<", datetime(2026, 1, 30, 12, 0))
    compiled = below.compile(dialect=sqlite.dialect())
    assert str(compiled) == '"IMUPMJ" <= ?' and compiled.params == {"wm_below_day": 126030}
    at_midnight = jde.watermark_bound(day, None, "<", datetime(2026, 1, 30)).compile(dialect=sqlite.dialect())
    assert str(at_midnight) == '"IMUPMJ" < ?' and at_midnight.params == {"wm_below_day": 126030}
