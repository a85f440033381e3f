"""The pieces of change detection by key range: row hashes as each database computes them, the
exact SQL of the engines we cannot run here, and the narrowing itself on two real databases."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
import sqlalchemy_sybase
from sqlalchemy.dialects import mssql, oracle

from sync_assets.dialects import get_dialect
from sync_assets.dialects.row_hash import RowHash
from sync_assets.sync.key_ranges import Range, Side, Sizes, compare, digest_statement, split_statement

ROWS = sa.Table(
    "rows",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(20)),
    sa.Column("amount", sa.Numeric(12, 2)),
    sa.Column("at", sa.DateTime),
)


def literal_sql(statement: sa.ClauseElement, dialect: sa.Dialect) -> str:
    return str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def test_row_hash_sql_server():
    assert literal_sql(sa.select(RowHash(*ROWS.c)), mssql.dialect()) == (
        "SELECT CAST(substring(hashbytes('MD5', "
        "coalesce(N'v' + CAST(rows.id AS NVARCHAR(max)), N'n') + nchar(31) + "
        "coalesce(N'v' + CAST(rows.name AS NVARCHAR(max)), N'n') + nchar(31) + "
        "coalesce(N'v' + CAST(rows.amount AS NVARCHAR(max)), N'n') + nchar(31) + "
        "coalesce(N'v' + CONVERT(NVARCHAR(max), rows.at, 126), N'n')), 1, 4) AS INTEGER) AS row_hash_1 \nFROM rows"
    )


def test_row_hash_oracle_hashes_each_column_so_wide_rows_fit():
    table = sa.Table(
        "f4211",
        sa.MetaData(),
        sa.Column("sddoco", oracle.NUMBER(8, 0)),
        sa.Column("sddsc1", oracle.NCHAR(30)),
        sa.Column("changed", oracle.DATE()),
        sa.Column("stamp", oracle.TIMESTAMP()),
        sa.Column("note", oracle.CLOB()),
        schema="proddta",
    )
    assert literal_sql(sa.select(RowHash(*table.c)), oracle.dialect()) == (
        "SELECT mod("
        "ora_hash(coalesce('v' || to_char(proddta.f4211.sddoco), 'n'), 4294967295, 1) + "
        "ora_hash(coalesce('v' || proddta.f4211.sddsc1, 'n'), 4294967295, 2) + "
        "ora_hash(coalesce('v' || to_char(proddta.f4211.changed, 'YYYY-MM-DD HH24:MI:SS'), 'n'), 4294967295, 3) + "
        "ora_hash(coalesce('v' || to_char(proddta.f4211.stamp, 'YYYY-MM-DD HH24:MI:SS.FF9'), 'n'), 4294967295, 4) + "
        "ora_hash(coalesce('v' || dbms_lob.substr(proddta.f4211.note, 4000, 1), 'n'), 4294967295, 5), "
        "4294967296) AS row_hash_1 \nFROM proddta.f4211"
    )


def test_row_hash_sybase():
    table = sa.Table(
        "cms_account", sa.MetaData(), sa.Column("acct_id", sa.Integer), sa.Column("opened", sa.DateTime)
    )
    assert literal_sql(sa.select(RowHash(*table.c)), sqlalchemy_sybase.dialect()) == (
        "SELECT (CAST(CAST(substring(hashbytes('md5', '1:' || coalesce('v' || "
        "CAST(cms_account.acct_id AS VARCHAR(16384)), 'n')), 1, 4) AS INTEGER) AS BIGINT) + "
        "CAST(CAST(substring(hashbytes('md5', '2:' || coalesce('v' || "
        "CONVERT(VARCHAR(32), cms_account.opened, 140), 'n')), 1, 4) AS INTEGER) AS BIGINT)) % 4294967296 "
        "AS row_hash_1 \nFROM cms_account"
    )


def composite_side() -> Side:
    table = sa.Table("f4211", sa.MetaData(), sa.Column("doco", sa.Integer), sa.Column("lnid", sa.Integer))
    return Side(None, table, [table.c.doco, table.c.lnid], RowHash(table.c.doco, table.c.lnid))  # type: ignore[arg-type]


@pytest.mark.parametrize("dialect", [mssql.dialect(), oracle.dialect()], ids=["mssql", "oracle"])
def test_key_range_sql_has_no_row_values(dialect):
    """SQL Server and Oracle have no (a, b) < (x, y): composite keys compare column by column, and
    the CASE is grouped from a derived table."""
    side = composite_side()
    chunk = [Range(None, (10, 1)), Range((10, 1), (20, 3)), Range((20, 3), None)]
    digest = literal_sql(digest_statement(side, chunk), dialect)
    # The cut points halved at each level: log2(64) = 6 comparisons per row for 64 ranges.
    bucket = (
        "CASE WHEN (f4211.doco < 20 OR f4211.doco = 20 AND f4211.lnid <= 3) THEN "
        "CASE WHEN (f4211.doco < 10 OR f4211.doco = 10 AND f4211.lnid <= 1) THEN 0 ELSE 1 END ELSE 2 END"
    )
    assert bucket in digest
    assert digest.startswith("SELECT 0 AS ")
    assert digest.endswith("GROUP BY ranged0._b") or digest.endswith('GROUP BY ranged0."_b"')
    split = literal_sql(split_statement(side, Range((10, 1), (20, 3)), every=32), dialect)
    assert "row_number() OVER (ORDER BY f4211.doco, f4211.lnid)" in split
    assert "NOT (f4211.doco < 10 OR f4211.doco = 10 AND f4211.lnid <= 1) AND " in split
    assert ('mod(numbered."_n", 32) = 0' if dialect.name == "oracle" else "numbered._n % 32 = 0") in split


@pytest.mark.parametrize("kind", ["sqlite", "duckdb", "postgresql"])
def test_row_hash_on_real_engines(make_database, kind):
    engine = sa.create_engine(make_database(kind))
    get_dialect(kind).prepare_engine(engine, role="source")
    ROWS.metadata.create_all(engine)
    at = datetime(2026, 1, 2, 3, 4, 5, 678901)
    rows = [
        {"id": 1, "name": "a", "amount": Decimal("1.50"), "at": at},
        {"id": 2, "name": "a", "amount": Decimal("1.50"), "at": at},  # other key
        {"id": 3, "name": "", "amount": Decimal("1.50"), "at": at},  # '' ...
        {"id": 4, "name": None, "amount": Decimal("1.50"), "at": at},  # ... is not NULL
        {"id": 5, "name": "a", "amount": Decimal("1.51"), "at": at},
        {"id": 6, "name": "a", "amount": Decimal("1.50"), "at": at.replace(microsecond=678902)},
        {"id": 7, "name": "a", "amount": Decimal("1.50"), "at": at},
    ]
    with engine.begin() as conn:
        conn.execute(ROWS.insert(), rows)
        hashed = dict(
            conn.execute(sa.select(ROWS.c.id, RowHash(ROWS.c.name, ROWS.c.amount, ROWS.c.at))).all()
        )
        again = dict(conn.execute(sa.select(ROWS.c.id, RowHash(ROWS.c.name, ROWS.c.amount, ROWS.c.at))).all())
    engine.dispose()
    assert hashed == again
    assert all(0 <= int(h) < 2**32 for h in hashed.values())
    assert hashed[1] == hashed[2] == hashed[7]  # the same values
    assert len({hashed[i] for i in (1, 3, 4, 5, 6)}) == 5


@pytest.mark.parametrize(("source_kind", "cache_kind"), [("sqlite", "duckdb"), ("postgresql", "sqlite")])
def test_narrowing_lists_only_the_ranges_that_differ(make_database, source_kind, cache_kind):
    """2,000 keys, ranges of 64 cut 4 ways down to 4 rows: 3 changes, 2 deletions, 1 insert."""
    table = sa.Table(
        "t",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("h", sa.BigInteger),
    )
    engines = {}
    for side, kind in (("source", source_kind), ("cache", cache_kind)):
        engines[side] = sa.create_engine(make_database(kind))
        table.metadata.create_all(engines[side])
    with engines["source"].begin() as conn:
        conn.execute(table.insert(), [{"id": i, "h": i * 7} for i in range(1, 2001) if i not in (500, 1999)])
        conn.execute(table.update().where(table.c.id.in_([3, 1000, 1500])).values(h=-1))
        conn.execute(table.insert(), [{"id": 5000, "h": 1}])
    with engines["cache"].begin() as conn:
        conn.execute(table.insert(), [{"id": i, "h": i * 7} for i in range(1, 2001)])
    with engines["source"].connect() as src, engines["cache"].connect() as cache:
        found = compare(
            Side(src, table, [table.c.id], table.c.h),
            Side(cache, table, [table.c.id], table.c.h),
            Sizes(range_rows=64, fanout=4, leaf_rows=4),
        )
    for engine in engines.values():
        engine.dispose()
    assert sorted(k for (k,) in found.changed) == [3, 1000, 1500, 5000]
    assert sorted(k for (k,) in found.missing) == [500, 1999]
    assert (found.source_rows, found.cache_rows) == (1999, 2000)
    # Six differing places, each narrowed to a range of at most four cache rows (the new key
    # beyond the last cache key shares the last range).
    assert len(found.cache) <= 6 * 4
