"""The type contract as a document, generated from the dialects themselves so it cannot drift.

    python -m sync_assets.dialects.type_table > docs/types.md

For each source database, each common source type is run through that dialect's `source_type`,
then through every cache dialect's `column_type` and `loss`, exactly as a sync does.
A test regenerates the document and compares it with the committed file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, oracle, postgresql, sqlite

from sync_assets.dialects.base import get_dialect
from sync_assets.errors import UnsupportedType
from sync_assets.types import ColumnType, polars_dtype

CACHES = ["sqlite", "postgresql", "duckdb", "mssql"]
Sample = tuple[str, Callable[[], sa.types.TypeEngine[Any]]]


def _duckdb(name: str) -> Callable[[], sa.types.TypeEngine[Any]]:
    def make() -> sa.types.TypeEngine[Any]:
        from sync_assets.dialects.duckdb import reflected_type

        return reflected_type(name)

    return make


def _sybase(name: str, *args: Any) -> Callable[[], sa.types.TypeEngine[Any]]:
    def make() -> sa.types.TypeEngine[Any]:
        from sqlalchemy_sybase import base as ase

        from sync_assets.dialects import sybase

        return (getattr(sybase, name, None) or getattr(ase, name))(*args)

    return make


# What reflection hands each dialect's `source_type` for the common column types.
SOURCES: dict[str, list[Sample]] = {
    "oracle": [
        ("NUMBER", oracle.NUMBER),
        ("NUMBER(9,0)", lambda: oracle.NUMBER(9, 0)),
        ("NUMBER(15,4)", lambda: oracle.NUMBER(15, 4)),
        ("NUMBER(38,0)", lambda: oracle.NUMBER(38, 0)),
        ("FLOAT(126)", lambda: oracle.FLOAT(126)),
        ("BINARY_DOUBLE", oracle.BINARY_DOUBLE),
        ("CHAR(12)", lambda: sa.CHAR(12)),
        ("VARCHAR2(40)", lambda: oracle.VARCHAR2(40)),
        ("NVARCHAR2(40)", lambda: oracle.NVARCHAR2(40)),
        ("CLOB", sa.CLOB),
        ("DATE", oracle.DATE),
        ("TIMESTAMP(6)", lambda: oracle.TIMESTAMP()),
        ("TIMESTAMP(9)", lambda: _with_precision(oracle.TIMESTAMP(), 9)),
        ("TIMESTAMP WITH TIME ZONE", lambda: oracle.TIMESTAMP(timezone=True)),
        ("RAW(16)", lambda: oracle.RAW(16)),
        ("BLOB", sa.BLOB),
        ("INTERVAL DAY TO SECOND", oracle.INTERVAL),
    ],
    "mssql": [
        ("TINYINT", mssql.TINYINT),
        ("INT", sa.INTEGER),
        ("BIGINT", sa.BIGINT),
        ("DECIMAL(38,10)", lambda: sa.DECIMAL(38, 10)),
        ("MONEY", mssql.MONEY),
        ("FLOAT", sa.FLOAT),
        ("BIT", mssql.BIT),
        ("NVARCHAR(40)", lambda: sa.NVARCHAR(40)),
        ("NVARCHAR(max)", sa.NVARCHAR),
        ("CHAR(12)", lambda: sa.CHAR(12)),
        ("DATE", sa.DATE),
        ("DATETIME", sa.DATETIME),
        ("SMALLDATETIME", mssql.SMALLDATETIME),
        ("DATETIME2(7)", lambda: mssql.DATETIME2(7)),
        ("DATETIMEOFFSET(7)", lambda: mssql.DATETIMEOFFSET(7)),
        ("TIME(7)", lambda: mssql.TIME(7)),
        ("UNIQUEIDENTIFIER", mssql.UNIQUEIDENTIFIER),
        ("VARBINARY(max)", mssql.VARBINARY),
        ("ROWVERSION", mssql.TIMESTAMP),
    ],
    "sybase": [
        ("TINYINT", _sybase("TINYINT")),
        ("UNSIGNED BIGINT", _sybase("UNSIGNED_BIGINT")),
        ("NUMERIC(15,4)", lambda: sa.NUMERIC(15, 4)),
        ("MONEY", _sybase("MONEY")),
        ("FLOAT", sa.FLOAT),
        ("BIT", _sybase("BIT")),
        ("CHAR(12)", lambda: sa.CHAR(12)),
        ("UNIVARCHAR(40)", _sybase("UNIVARCHAR", 40)),
        ("TEXT", sa.TEXT),
        ("DATE", sa.DATE),
        ("DATETIME", sa.DATETIME),
        ("BIGDATETIME", _sybase("BIGDATETIME")),
        ("IMAGE", _sybase("IMAGE")),
    ],
    "postgresql": [
        ("smallint", sa.SMALLINT),
        ("bigint", sa.BIGINT),
        ("numeric(15,4)", lambda: sa.NUMERIC(15, 4)),
        ("numeric(50,10)", lambda: sa.NUMERIC(50, 10)),
        ("numeric", sa.NUMERIC),
        ("double precision", postgresql.DOUBLE_PRECISION),
        ("varchar(40)", lambda: sa.VARCHAR(40)),
        ("text", sa.TEXT),
        ("boolean", sa.BOOLEAN),
        ("date", sa.DATE),
        ("timestamp", postgresql.TIMESTAMP),
        ("timestamptz", lambda: postgresql.TIMESTAMP(timezone=True)),
        ("time", postgresql.TIME),
        ("bytea", postgresql.BYTEA),
        ("uuid", postgresql.UUID),
        ("jsonb", postgresql.JSONB),
        ("interval", postgresql.INTERVAL),
    ],
    "sqlite": [
        ("INTEGER", sqlite.INTEGER),
        ("NUMERIC(15,4)", lambda: sqlite.NUMERIC(15, 4)),
        ("NUMERIC(30,10)", lambda: sqlite.NUMERIC(30, 10)),
        ("REAL", sqlite.REAL),
        ("TEXT", sqlite.TEXT),
        ("BOOLEAN", sqlite.BOOLEAN),
        ("DATE", sqlite.DATE),
        ("DATETIME", sqlite.DATETIME),
        ("BLOB", sqlite.BLOB),
    ],
    "duckdb": [
        ("HUGEINT", _duckdb("HUGEINT")),
        ("DECIMAL(38,10)", _duckdb("DECIMAL(38,10)")),
        ("DOUBLE", _duckdb("DOUBLE")),
        ("VARCHAR", _duckdb("VARCHAR")),
        ("TIMESTAMP", _duckdb("TIMESTAMP")),
        ("TIMESTAMP_NS", _duckdb("TIMESTAMP_NS")),
        ("TIMESTAMPTZ", _duckdb("TIMESTAMP WITH TIME ZONE")),
        ("UUID", _duckdb("UUID")),
        ("BLOB", _duckdb("BLOB")),
        ("STRUCT(...)", _duckdb("STRUCT(a INTEGER)")),
    ],
}


def _with_precision(type_: Any, precision: int) -> Any:
    """Reflection attaches TIMESTAMP's fractional digits as an attribute."""
    type_.precision = precision
    return type_


def _sqlalchemy_dialect(cache: str) -> sa.Dialect:
    """The SQLAlchemy dialect as a connection would set it up (SQL Server: a 2008+ server)."""
    dialect = sa.create_mock_engine(f"{cache}://", None).dialect  # type: ignore[arg-type]
    if cache == "mssql":
        dialect.server_version_info = (16, 0)
        dialect._setup_version_attributes()  # type: ignore[attr-defined]
    return dialect


def _ddl(cache: str, ct: ColumnType) -> str:
    dialect = get_dialect(cache)
    compiled = dialect.column_type(ct).compile(dialect=_sqlalchemy_dialect(cache))
    loss = dialect.loss(ct)
    return f"{compiled} ⚠ {loss}" if loss else str(compiled)


def rows(source: str) -> list[list[str]]:
    """One row per sample type: source type, neutral type, batch dtype, then one cell per cache."""
    dialect = get_dialect(source)
    table: list[list[str]] = []
    for name, make in SOURCES[source]:
        try:
            ct = dialect.source_type(make(), table="t", column="c")
        except UnsupportedType:
            table.append([f"`{name}`", "refused: the sync fails naming the column", "", *[""] * len(CACHES)])
            continue
        cells = [_ddl(cache, ct) for cache in CACHES]
        table.append([f"`{name}`", ct.describe(), str(polars_dtype(ct)), *cells])
    return table


def markdown() -> str:
    lines = [
        "# Type contract",
        "",
        "Generated by `python -m sync_assets.dialects.type_table` from the dialect modules; a test",
        "keeps this file in step with the code. Each source type is mapped to a neutral type, carried",
        "in batches as the polars dtype shown, and created in each cache as the DDL shown.",
        "",
        "⚠ marks a mapping that would lose data: the sync fails and names the column unless the",
        "table lists it under `allow_lossy` (then the cache keeps what it can: timestamps are",
        "truncated to the cache's fractional digits; decimals take the cache's DECIMAL(38, s), whose",
        "scale the cache rounds to, and a value beyond its range fails the load).",
        "",
        "Driver limits the table reflects:",
        "",
        "- SQL Server `DATETIME2(7)`, `DATETIMEOFFSET(7)` and `TIME(7)` are read to microseconds (6",
        "  fractional digits), through pyodbc and mssql-python alike: the seventh digit (100 ns) is",
        "  not read.",
        "- A SQL Server source on mssql-python (`mssql+mssqlpython://`) is read by its Arrow reader:",
        "  a `DATETIMEOFFSET` arrives as its UTC instant (the offset is not kept), a `UNIQUEIDENTIFIER`",
        "  as upper-case text, lowercased here; `MONEY`, `TEXT`, `NTEXT` and `IMAGE` are read as the",
        "  `DECIMAL`, `(N)VARCHAR(max)` and `VARBINARY(max)` they convert to exactly. A column the",
        "  driver would not deliver exactly (an untyped query column) sends the table through rows.",
        "- A SQL Server (pyodbc) or SAP ASE connection with `arrow_odbc: true` is read by arrow-odbc,",
        "  each column fetched as a type that holds all its values (integers at their width, decimals",
        "  at their precision, timestamps to microseconds), then cast here with range checks. Zoned",
        "  timestamps, unbounded text and binary (`VARCHAR(max)`, `TEXT`, `IMAGE`), ASE's `UNSIGNED",
        "  BIGINT`, `MONEY` and parameters other than integers and ASCII text send the table through",
        "  rows, decided before anything is read.",
        "- Timestamps with more than 6 fractional digits travel as nanoseconds, which cover",
        "  1677-09-21 to 2262-04-11 (as DuckDB's `TIMESTAMP_NS` does); a value outside fails the sync",
        "  naming the column.",
        "- SQLite keeps 15 significant digits of a NUMERIC (wider decimals are cached as exact text)",
        "  and stores an integral float as an integer, so a negative zero loses its sign there.",
        "- A SQLite source is read by ADBC's SQLite driver, with the values SQLAlchemy's rows would",
        "  have: text-kept types are read as text and parsed here; a value that changes storage class",
        "  between batches of one column fails the sync naming it; a table with a decimal wider than",
        "  15 digits is read through rows, which format SQLite's floats to the column's scale.",
        "- A PostgreSQL cache loads binary COPY encoded by pgpq: a uuid column, or a numeric carried",
        "  as text (wider than 38 digits), makes the batch go as CSV COPY instead, with the same values.",
        "",
    ]
    header = ["source type", "neutral type", "batch dtype", *[f"{c} cache" for c in CACHES]]
    for source in SOURCES:
        lines += [f"## {source} source", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(cells) + " |" for cells in rows(source)]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
