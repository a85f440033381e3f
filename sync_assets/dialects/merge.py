"""A dialect-neutral MERGE statement; each database that has one compiles it with `@compiles`.

Identifiers and expressions go through the dialect's compiler, never through string pasting
(https://docs.sqlalchemy.org/en/20/core/compiler.html).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable


class Merge(Executable, ClauseElement):
    """MERGE INTO `target` USING `source` ON the `key` columns: update the rest, insert the new keys.

    `source` is a named subquery whose columns carry the target's column names. `changed`, when
    given, limits the update to the matched rows it holds for (those whose values differ).
    """

    inherit_cache = False  # built once per sync; not worth a cache key

    def __init__(
        self,
        target: sa.Table,
        source: sa.Subquery,
        *,
        key: Sequence[str],
        changed: sa.ColumnElement[bool] | None = None,
    ) -> None:
        self.target = target
        self.source = source
        self.key = list(key)
        self.changed = changed
        self.names = [c.name for c in target.columns]
        self.non_key = [n for n in self.names if n not in self.key]


@compiles(Merge)
def _merge_default(element: Merge, compiler: SQLCompiler, **kw: Any) -> str:
    msg = f"no MERGE statement for the {compiler.dialect.name} dialect"
    raise sa.exc.CompileError(msg)


@compiles(Merge, "mssql")
def _merge_mssql(element: Merge, compiler: SQLCompiler, **kw: Any) -> str:
    # HOLDLOCK makes the match-then-insert atomic against other writers, and SQL Server refuses a
    # MERGE without its terminating semicolon
    # (https://learn.microsoft.com/en-us/sql/t-sql/statements/merge-transact-sql).
    quote = compiler.preparer.quote
    target, source = element.target, element.source
    on = " AND ".join(
        f"{compiler.process(target.c[k], **kw)} = {compiler.process(source.c[k], **kw)}" for k in element.key
    )
    parts = [
        f"MERGE INTO {compiler.preparer.format_table(target)} WITH (HOLDLOCK)",
        f"USING {compiler.process(source, asfrom=True, **kw)}",
        f"ON {on}",
    ]
    if element.non_key:
        assignments = ", ".join(
            f"{quote(n)} = {compiler.process(source.c[n], **kw)}" for n in element.non_key
        )
        changed = element.changed
        condition = "" if changed is None else f" AND ({compiler.process(changed, **kw)})"
        parts.append(f"WHEN MATCHED{condition} THEN UPDATE SET {assignments}")
    columns = ", ".join(quote(n) for n in element.names)
    values = ", ".join(compiler.process(source.c[n], **kw) for n in element.names)
    parts.append(f"WHEN NOT MATCHED BY TARGET THEN INSERT ({columns}) VALUES ({values});")
    return "\n".join(parts)
