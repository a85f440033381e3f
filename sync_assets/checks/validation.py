"""One check per validation rule of a table, evaluated on its cache table."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import dagster as dg
import sqlalchemy as sa

from sync_assets.catalog.models import TableSpec
from sync_assets.catalog.operations import Severity, ValidationRule
from sync_assets.checks.common import (
    SAMPLE_SIZE,
    CheckResources,
    TableCheck,
    connect,
    missing_columns,
    not_synced,
    shown,
    shown_key,
    table_check,
)


def validation_checks(table: TableSpec, asset_key: dg.AssetKey) -> list[TableCheck]:
    """One check per rule, in the catalog's order; ERROR rules are blocking."""
    return [_rule_check(table, asset_key, rule) for rule in table.checks]


def _rule_check(table: TableSpec, asset_key: dg.AssetKey, rule: ValidationRule) -> TableCheck:
    error = rule.severity is Severity.ERROR
    severity = dg.AssetCheckSeverity.ERROR if error else dg.AssetCheckSeverity.WARN

    def evaluate(resources: CheckResources) -> dg.AssetCheckResult:
        with connect(resources, table, source=False) as opened:
            target = opened.target(table)
            if target is None:
                return not_synced(table)
            what = f"named by check '{rule.check_name}'"
            absent = missing_columns(table, target, _columns(rule), severity=severity, what=what)
            if absent is not None:
                return absent
            found = _evaluate(opened.cache, table, target, rule)
        return dg.AssetCheckResult(
            passed=found.passed,
            severity=severity,
            metadata={"cache_table": table.target, "rule": rule.kind, **found.metadata},
            description=f"table '{table.name}': {found.description}",
        )

    return table_check(
        rule.check_name,
        asset_key,
        evaluate,
        description=f"Validation rule `{rule.kind}` on cache table {table.target}",
        blocking=error,
    )


@dataclass(frozen=True)
class _Finding:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _columns(rule: ValidationRule) -> list[str]:
    if rule.not_null:
        return rule.not_null
    if rule.unique:
        return rule.unique
    if rule.accepted_values:
        return [rule.accepted_values.column]
    if rule.range:
        return [rule.range.column]
    return []


def _evaluate(conn: sa.Connection, table: TableSpec, target: sa.Table, rule: ValidationRule) -> _Finding:
    if rule.row_count is not None:
        rows = conn.execute(sa.select(sa.func.count()).select_from(target)).scalar_one()
        low, high = rule.row_count.min, rule.row_count.max
        passed = (low is None or rows >= low) and (high is None or rows <= high)
        bounds = f"[{'-' if low is None else low}, {'-' if high is None else high}]"
        verdict = "within" if passed else "outside"
        return _Finding(passed, f"{rows} rows, {verdict} {bounds}", {"row_count": rows})
    if rule.sql is not None:
        return _user_sql(conn, table, rule.sql)
    if rule.unique:
        return _duplicates(conn, table, target, rule.unique)
    where, what = _offending(target, rule)
    rows = conn.execute(sa.select(sa.func.count()).select_from(target).where(where)).scalar_one()
    keys = _sample_keys(conn, table, target, where)
    return _Finding(
        rows == 0,
        f"{rows} rows {what}",
        {"offending_rows": rows, "sample_keys": dg.MetadataValue.json(keys)},
    )


def _offending(target: sa.Table, rule: ValidationRule) -> tuple[sa.ColumnElement[bool], str]:
    """The WHERE clause finding the rows a not_null, accepted_values or range rule rejects."""
    if rule.not_null:
        nulls = [target.c[c].is_(None) for c in rule.not_null]
        return sa.or_(*nulls), f"with NULL in {', '.join(rule.not_null)}"
    if rule.accepted_values:
        column = target.c[rule.accepted_values.column]
        values = rule.accepted_values.values
        return sa.and_(column.is_not(None), _not_in(column, values)), f"with {column.name} not in {values}"
    assert rule.range is not None
    column = target.c[rule.range.column]
    # A decimal too wide for a SQLite REAL is cached as exact text; compare it as a number.
    value = sa.cast(column, sa.Numeric) if isinstance(column.type, sa.String) else column
    outside = []
    if rule.range.min is not None:
        outside.append(value < rule.range.min)
    if rule.range.max is not None:
        outside.append(value > rule.range.max)
    bounds = f"[{rule.range.min}, {rule.range.max}]"
    return sa.and_(column.is_not(None), sa.or_(sa.false(), *outside)), f"with {column.name} outside {bounds}"


def _not_in(column: sa.ColumnElement[Any], values: list[Any]) -> sa.ColumnElement[bool]:
    """Typed where the YAML values fit the column's type, else as text, which both databases agree on."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = str
    if issubclass(python_type, str):
        return column.not_in([str(v) for v in values])
    if python_type is bool:
        typed = all(isinstance(v, bool) for v in values)
    elif python_type in (int, float, Decimal):
        typed = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    else:
        typed = False
    if typed:
        return column.not_in(values)
    return sa.cast(column, sa.Text).not_in([str(v) for v in values])


def _duplicates(conn: sa.Connection, table: TableSpec, target: sa.Table, columns: list[str]) -> _Finding:
    """Key groups held by more than one row; NULLs never collide, as in a UNIQUE constraint."""
    keys = [target.c[c] for c in columns]
    groups = (
        sa.select(*keys)
        .where(*[k.is_not(None) for k in keys])
        .group_by(*keys)
        .having(sa.func.count() > 1)
        .subquery("duplicated")
    )
    count = conn.execute(sa.select(sa.func.count()).select_from(groups)).scalar_one()
    joined = target.join(groups, sa.and_(*[target.c[c] == groups.c[c] for c in columns]))
    sample = _sample_keys(conn, table, target, sa.true(), from_=joined)
    return _Finding(
        count == 0,
        f"{count} values of ({', '.join(columns)}) are held by more than one row",
        {"duplicate_groups": count, "sample_keys": dg.MetadataValue.json(sample)},
    )


def _sample_keys(
    conn: sa.Connection,
    table: TableSpec,
    target: sa.Table,
    where: sa.ColumnElement[bool],
    *,
    from_: sa.FromClause | None = None,
) -> list[Any]:
    """Primary keys of a few offending rows, so someone can look them up."""
    if any(k not in target.c for k in table.primary_key):
        return []
    key = [target.c[k] for k in table.primary_key]
    statement = sa.select(*key).select_from(from_ if from_ is not None else target).where(where)
    rows = conn.execute(statement.order_by(*key).limit(SAMPLE_SIZE)).all()
    return [shown_key(tuple(r)) for r in rows]


def _user_sql(conn: sa.Connection, table: TableSpec, sql: str) -> _Finding:
    """Count the rows a user's SELECT returns, streaming them; keep a few as the sample."""
    quoted = conn.dialect.identifier_preparer.quote(table.target)
    result = conn.execution_options(yield_per=1000).execute(sa.text(sql.replace("{table}", quoted)))
    names = list(result.keys())
    rows, sample = 0, []
    for row in result:
        rows += 1
        if len(sample) < SAMPLE_SIZE:
            sample.append({n: shown(v) for n, v in zip(names, row, strict=True)})
    return _Finding(
        rows == 0,
        f"the query returned {rows} offending rows",
        {"offending_rows": rows, "sample_rows": dg.MetadataValue.json(sample)},
    )
