"""ALTER TABLE ... ADD a column, as each database spells it: SQLAlchemy Core has no such construct.

The column's name and type come from the dialect's DDL compiler and identifier preparer, as in
CREATE TABLE (https://docs.sqlalchemy.org/en/20/core/compiler.html).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler


class AddColumn(ExecutableDDLElement):
    """Add `column`, which belongs to `table`'s definition, to the existing table."""

    inherit_cache = False

    def __init__(self, table: sa.Table, column: sa.Column[Any]) -> None:
        self.table = table
        self.column = column


@compiles(AddColumn)
def _add_column(element: AddColumn, compiler: DDLCompiler, **kw: Any) -> str:
    table = compiler.preparer.format_table(element.table)
    return f"ALTER TABLE {table} ADD COLUMN {compiler.get_column_specification(element.column)}"


# No COLUMN keyword here (https://learn.microsoft.com/en-us/sql/t-sql/statements/alter-table-transact-sql,
# https://docs.oracle.com/en/database/oracle/oracle-database/23/sqlrf/ALTER-TABLE.html).
@compiles(AddColumn, "mssql")
@compiles(AddColumn, "oracle")
@compiles(AddColumn, "sybase")
def _add_column_without_keyword(element: AddColumn, compiler: DDLCompiler, **kw: Any) -> str:
    table = compiler.preparer.format_table(element.table)
    return f"ALTER TABLE {table} ADD {compiler.get_column_specification(element.column)}"
