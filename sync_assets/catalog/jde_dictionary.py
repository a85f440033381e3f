"""JD Edwards' data dictionary, as far as scaffolding a catalog needs it: per data item (the column
name without its two-letter table prefix: WADOCO -> DOCO), its display decimals, its description,
whether it is a JDE date, and a cache name someone chose.

Read from JDE's own tables through the source connection: F9210 (data field specifications:
FRDTAI data item, FRCDEC display decimals, FROWTP type, 11 = date) and, beside it, F9202 (data
field display text: FRDSCA, per language FRLNGP and product code FRSYR), or from a file of the
user's (`--dictionary`, YAML or CSV). Implied decimals come from here only: they are never guessed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from sync_assets.catalog.introspect import IntrospectionError
from sync_assets.dialects.base import SourceDialect

SPECIFICATIONS_TABLE = "F9210"
DISPLAY_TEXT_TABLE = "F9202"
JDE_DATE_TYPE = 11  # FROWTP of a JDE date (a CYYDDD number in the database)
FILE_KEYS = ("decimals", "description", "name", "julian_date")


@dataclass(frozen=True)
class DataItem:
    decimals: int | None = None
    description: str | None = None
    name: str | None = None  # a cache name chosen by the dictionary's author (files only)
    julian_date: bool | None = None  # None: the dictionary does not say


@dataclass(frozen=True)
class Dictionary:
    origin: str  # how comments name it: "F9210 in DD920", "dictionary.yaml"
    items: dict[str, DataItem]
    # F9202 text written for one product code (FRSYR), by (data item, code): "Order Number" for
    # DOCO in system 48 (work orders), where the item's own text is "Document (Order No, ...)".
    product_texts: dict[tuple[str, str], str] = field(default_factory=dict)

    def item(self, data_item: str) -> DataItem | None:
        return self.items.get(data_item.upper())

    def description(self, data_item: str, *, product_code: str | None) -> str | None:
        if product_code and (text := self.product_texts.get((data_item.upper(), product_code))):
            return text
        found = self.item(data_item)
        return found.description if found else None


def from_file(path: Path) -> Dictionary:
    """A YAML mapping `DOCO: {decimals: 0, description: ..., name: order_number}`, or a CSV with a
    `data_item` column and any of decimals, description, name, julian_date."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        msg = f"{path}: cannot read the dictionary: {err.strerror}"
        raise IntrospectionError(msg) from err
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and "data_item" not in rows[0]:
            msg = f"{path}: a CSV dictionary needs a `data_item` column (and decimals, description, name)"
            raise IntrospectionError(msg)
        entries: dict[str, Any] = {
            r["data_item"]: {k: v for k, v in r.items() if k != "data_item"} for r in rows
        }
    else:
        try:
            entries = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            msg = f"{path}: invalid YAML: {err}"
            raise IntrospectionError(msg) from None
        if not isinstance(entries, dict):
            msg = f"{path}: a dictionary maps data items to {{decimals, description, name}}"
            raise IntrospectionError(msg)
    items = {str(key).strip().upper(): _file_item(path, str(key), value) for key, value in entries.items()}
    return Dictionary(origin=path.name, items=items)


def _file_item(path: Path, key: str, value: Any) -> DataItem:
    if not isinstance(value, dict):
        msg = f"{path}: data item '{key}': expected a mapping of {', '.join(FILE_KEYS)}"
        raise IntrospectionError(msg)
    if unknown := sorted(set(value) - set(FILE_KEYS)):
        msg = f"{path}: data item '{key}': unknown key '{unknown[0]}' (known: {', '.join(FILE_KEYS)})"
        raise IntrospectionError(msg)
    try:
        decimals = _number(value.get("decimals"))
    except ValueError:
        msg = f"{path}: data item '{key}': decimals '{value['decimals']}' is not a whole number"
        raise IntrospectionError(msg) from None
    flag = value.get("julian_date")
    julian = None if flag in (None, "") else str(flag).strip().lower() in ("true", "yes", "1")
    return DataItem(decimals, _text(value.get("description")), _text(value.get("name")), julian)


def find_in_source(
    conn: sa.Connection, dialect: SourceDialect, schemas: list[str | None]
) -> Dictionary | None:
    """JDE's F9210 (with F9202 beside it, if there) in the first of `schemas` that has it."""
    inspector = sa.inspect(conn)
    for schema in schemas:
        try:
            names = {dialect.source_column_name(n).upper() for n in inspector.get_table_names(schema=schema)}
        except sa.exc.SQLAlchemyError:
            continue  # a schema this user cannot list is a schema without a dictionary for us
        if SPECIFICATIONS_TABLE in names:
            texts = DISPLAY_TEXT_TABLE in names
            return _read_tables(conn, dialect, schema, with_display_text=texts)
    return None


def _read_tables(
    conn: sa.Connection, dialect: SourceDialect, schema: str | None, *, with_display_text: bool
) -> Dictionary:
    specs = _columns(dialect.reflect_table(conn, SPECIFICATIONS_TABLE, schema=schema), dialect)
    if "FRDTAI" not in specs:
        where = f"{schema}.{SPECIFICATIONS_TABLE}" if schema else SPECIFICATIONS_TABLE
        msg = f"{where} has no FRDTAI column: it is not JDE's data dictionary"
        raise IntrospectionError(msg)
    wanted = [specs[c] for c in ("FRDTAI", "FRCDEC", "FROWTP", "FRDSCA") if c in specs]
    items: dict[str, DataItem] = {}
    for row in conn.execute(sa.select(*wanted)).mappings():
        values = {dialect.source_column_name(k).upper(): v for k, v in row.items()}
        item = _text(values["FRDTAI"])
        if not item:
            continue
        kind = _number_or_none(values.get("FROWTP"))
        items[item.upper()] = DataItem(
            decimals=_number_or_none(values.get("FRCDEC")),
            description=_text(values.get("FRDSCA")),
            julian_date=None if "FROWTP" not in specs else kind == JDE_DATE_TYPE,
        )
    products: dict[tuple[str, str], str] = {}
    if with_display_text:
        items, products = _display_texts(conn, dialect, schema, items)
    where = f"{SPECIFICATIONS_TABLE} in {schema}" if schema else SPECIFICATIONS_TABLE
    return Dictionary(origin=where, items=items, product_texts=products)


def _display_texts(
    conn: sa.Connection, dialect: SourceDialect, schema: str | None, items: dict[str, DataItem]
) -> tuple[dict[str, DataItem], dict[tuple[str, str], str]]:
    """F9202's base-language texts (FRLNGP blank): an item's own (FRSYR blank) replaces F9210's."""
    texts = _columns(dialect.reflect_table(conn, DISPLAY_TEXT_TABLE, schema=schema), dialect)
    text_column = texts.get("FRDSCA", texts.get("FRDSCR"))
    if "FRDTAI" not in texts or text_column is None:
        return items, {}
    wanted = [texts["FRDTAI"], text_column, *(texts[c] for c in ("FRLNGP", "FRSYR") if c in texts)]
    products: dict[tuple[str, str], str] = {}
    own: dict[str, str] = {}
    for row in conn.execute(sa.select(*wanted)):
        values = dict(
            zip(["item", "text", *(c for c in ("FRLNGP", "FRSYR") if c in texts)], row, strict=True)
        )
        item, text = _text(values["item"]), _text(values["text"])
        if not item or not text or _text(values.get("FRLNGP")):
            continue
        if product := _text(values.get("FRSYR")):
            products[(item.upper(), product)] = text
        else:
            own[item.upper()] = text
    merged = {
        key: DataItem(found.decimals, own.get(key, found.description), found.name, found.julian_date)
        for key, found in items.items()
    }
    return merged, products


def _columns(table: sa.Table, dialect: SourceDialect) -> dict[str, sa.Column[Any]]:
    return {dialect.source_column_name(c.name).upper(): c for c in table.columns}


def _text(value: Any) -> str | None:
    """JDE pads its text columns; blank is no value."""
    text = "" if value is None else str(value).strip()
    return text or None


def _number(value: Any) -> int | None:
    """FRCDEC is text in JDE (blank for a non-numeric item); a number elsewhere."""
    text = _text(value)
    return None if text is None else int(float(text))


def _number_or_none(value: Any) -> int | None:
    """A dictionary row's number; one that is not a number says nothing (JDE's own rows hold junk
    in columns an item's type does not use)."""
    try:
        return _number(value)
    except ValueError:
        return None
