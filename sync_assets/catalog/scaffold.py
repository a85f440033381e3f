"""A reflected source table turned into a catalog entry (YAML text with comments saying why).

The key comes from the source's primary key, else its first unique key; the watermark from an
indexed timestamp (any timestamp where zonemaps serve ranges) whose name says it changes with the
row, or JDE's UPMJ + TDAY/UPMT pair. A table without a key, or with a column sync_assets cannot
read, is written commented out with a TODO, so the catalog stays valid. JDE conventions are
recognised by JDE's naming rules (an F-number table whose columns share a two-letter prefix);
implied decimals come only from a data dictionary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from sync_assets.catalog.introspect import ReflectedColumn, ReflectedTable, UniqueKey
from sync_assets.catalog.jde_dictionary import Dictionary
from sync_assets.catalog.models import IDENTIFIER
from sync_assets.types import Kind

JDE_TABLE = re.compile(r"^F\d{2,}[A-Z0-9]*$", re.IGNORECASE)  # F4801, F03B11, F0911Z1, F554801
JDE_PREFIX = re.compile(r"^[A-Z][A-Z0-9]$", re.IGNORECASE)
JDE_UPDATED_DATE = "UPMJ"  # Date - Updated
JDE_UPDATED_TIMES = ("TDAY", "UPMT")  # Time of Day, Time - Last Updated (HHMMSS)
JDE_TIMES_COLUMN = "updated_at"  # the cache column `jde.times` makes of the pair
# A timestamp that changes whenever the row does says so in its name.
CHANGE_NAME = re.compile(r"updat|modif|chang|last_?upd|edit|mtime|lastmod", re.IGNORECASE)
MAX_FRIENDLY_CHARS = 40
ORDINALS = {"1st": "first", "2nd": "second", "3rd": "third", "4th": "fourth", "5th": "fifth"}
NUMERIC = (Kind.INTEGER, Kind.DECIMAL, Kind.FLOAT)


@dataclass
class ScaffoldedColumn:
    source: str
    cache: str
    notes: list[str] = field(default_factory=list)
    description: str | None = None  # the dictionary's, for the UI's Columns table


@dataclass(frozen=True)
class Entry:
    """One `tables:` item: its YAML lines (the first starts with `- `), and why it is commented
    out if it is."""

    name: str
    table: ReflectedTable
    lines: tuple[str, ...]
    todo: str | None = None

    def text(self, indent: int) -> str:
        pad = " " * indent
        return "".join(f"{pad}{line}".rstrip() + "\n" for line in self.lines)


@dataclass(frozen=True)
class JdeFacts:
    prefix: str
    julian: dict[str, str]  # column -> why it is taken for a Julian date
    times: tuple[str, str] | None  # (UPMJ column, TDAY/UPMT column)
    decimals: dict[str, int]
    trim: bool


def snake_case(text: str) -> str:
    """'OrderLines' -> 'order_lines', 'Date - Updated' -> 'date_updated'; '' when nothing is left."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    spaced = spaced.replace("&", " and ").replace("#", " number ").replace("%", " percent ")
    words = re.findall(r"[a-z0-9]+", spaced.lower())
    if words and words[0][0].isdigit():
        words = [ORDINALS.get(words[0], f"n{words[0]}"), *words[1:]]
    return "_".join(words)[:63].rstrip("_")


def friendly_name(description: str) -> str:
    """A cache name from a dictionary description: its words without the parenthesised aside,
    at most 40 characters cut at a word ("Document (Order No, Invoice, etc.)" -> "document")."""
    plain = re.sub(r"\([^)]*\)", " ", description)
    name = snake_case(plain) or snake_case(description)
    while len(name) > MAX_FRIENDLY_CHARS and "_" in name:
        name = name.rsplit("_", 1)[0]
    return name


def is_identifier(name: str) -> bool:
    return re.match(IDENTIFIER, name) is not None and len(name) <= 63


def jde_prefix(table: ReflectedTable) -> str | None:
    """The two-letter column prefix of a JDE table (WA of F4801's WADOCO), by JDE's naming rules."""
    if not JDE_TABLE.match(table.name) or not table.columns:
        return None
    prefix = table.columns[0].name[:2]
    if not JDE_PREFIX.match(prefix):
        return None
    if all(c.name[:2].upper() == prefix.upper() and len(c.name) > 2 for c in table.columns):
        return prefix
    return None


def scaffold(table: ReflectedTable, *, name: str, connection: str, dictionary: Dictionary | None) -> Entry:
    """The catalog entry for `table`, named `name`, read through `connection`."""
    prefix = jde_prefix(table)
    jde = _jde_facts(table, prefix, dictionary) if prefix else None
    columns = _columns(table, jde, dictionary)
    cache = {c.source: c.cache for c in columns}
    lines = [f"- name: {_scalar(name)}", f"  source: {_scalar(connection)}"]
    lines.append(f"  source_table: {_scalar(table.name)}")
    if table.schema:
        lines.append(f"  source_schema: {_scalar(table.schema)}")
    key_lines, no_key = _key(table, cache)
    lines += key_lines
    lines += _watermark(table, cache, jde)
    lines += _column_lines(columns)
    if jde is not None:
        lines += _jde_lines(table, jde, dictionary)
    header = f"# {table.where} from connection '{connection}' ({len(table.columns)} columns"
    header += f"; a JDE table: F-number name, every column prefixed {prefix})" if prefix else ")"
    todos = [no_key] if no_key else []
    todos += [f"column {c.name}: {c.problem}" for c in table.columns if c.problem]
    if not todos:
        return Entry(name, table, (header, *lines))
    todo = "; ".join(todos)
    notes = [f"# TODO: {text}" for text in todos]
    notes.append("# Fix the above, then uncomment the entry (it stays commented out so the catalog loads).")
    return Entry(name, table, (header, *notes, *(f"# {line}" for line in lines)), todo=todo)


def _jde_facts(table: ReflectedTable, prefix: str, dictionary: Dictionary | None) -> JdeFacts:
    julian: dict[str, str] = {}
    decimals: dict[str, int] = {}
    origin = dictionary.origin if dictionary else None
    for column in table.columns:
        item = column.name[len(prefix) :]
        found = dictionary.item(item) if dictionary else None
        if not _whole_number(column):
            continue
        if found is not None and found.julian_date is not None:
            if found.julian_date:
                julian[column.name] = f"Julian date ({origin}: {item} is a JDE date)"
        elif item.upper().endswith("J"):
            julian[column.name] = f"Julian date? a guess ({item} ends in J, JDE's rule): check"
        if (
            found is not None
            and found.decimals
            and column.name not in julian
            and item.upper() not in JDE_UPDATED_TIMES
        ):
            decimals[column.name] = found.decimals
    by_item = {c.name[len(prefix) :].upper(): c.name for c in table.columns}
    day = by_item.get(JDE_UPDATED_DATE)
    time = next((by_item[t] for t in JDE_UPDATED_TIMES if t in by_item), None)
    times = (day, time) if day in julian and time and _whole_number(table.column(time)) else None
    trim = any(c.fixed_width for c in table.columns)
    return JdeFacts(prefix, julian, times, decimals, trim)


def _whole_number(column: ReflectedColumn) -> bool:
    ct = column.type
    if ct is None or ct.kind not in NUMERIC:
        return False
    return ct.kind is not Kind.DECIMAL or not ct.scale


def _columns(
    table: ReflectedTable, jde: JdeFacts | None, dictionary: Dictionary | None
) -> list[ScaffoldedColumn]:
    """Every source column with its cache name (unique, case-insensitively) and what to say of it."""
    taken = {JDE_TIMES_COLUMN} if jde is not None and jde.times else set()
    product = _product_code(table.name) if jde else None
    out = []
    for column in table.columns:
        notes = [column.type_text]
        item = column.name[len(jde.prefix) :] if jde else None
        found = dictionary.item(item) if dictionary and item else None
        description = dictionary.description(item, product_code=product) if dictionary and item else None
        if found is not None and found.name and is_identifier(found.name):
            wanted, origin = found.name, f"name from {dictionary.origin}"  # type: ignore[union-attr]
        elif description and (friendly := friendly_name(description)) and is_identifier(friendly):
            wanted, origin = friendly, f'{dictionary.origin}: "{description}"'  # type: ignore[union-attr]
        elif is_identifier(column.name):
            wanted, origin = column.name, ""
        else:
            wanted, origin = snake_case(column.name) or "column", "not a valid cache name as it is"
        cache = _unique(wanted, taken, item)
        taken.add(cache.lower())
        if origin:
            notes.append(origin)
        if jde is not None:
            if column.name in jde.julian:
                notes.append(jde.julian[column.name])
            if jde.times and column.name == jde.times[1]:
                notes.append("HHMMSS time")
            if column.name in jde.decimals:
                notes.append(f"{jde.decimals[column.name]} implied decimals ({dictionary.origin})")  # type: ignore[union-attr]
        if column.problem:
            notes.append(f"CANNOT SYNC: {column.problem}")
        out.append(ScaffoldedColumn(column.name, cache, notes, description=description))
    return out


def _product_code(table_name: str) -> str:
    """JDE's product (system) code of a table: F4801 -> 48, F03B11 -> 03B."""
    match = re.match(r"^F(\d\d[A-Z]?)", table_name, re.IGNORECASE)
    return match.group(1).upper() if match else ""


def _unique(wanted: str, taken: set[str], item: str | None) -> str:
    if wanted.lower() not in taken:
        return wanted
    if item and f"{wanted}_{item}".lower() not in taken and is_identifier(f"{wanted}_{item.lower()}"):
        return f"{wanted}_{item.lower()}"
    n = 2
    while f"{wanted}_{n}".lower() in taken:
        n += 1
    return f"{wanted}_{n}"


def _key(table: ReflectedTable, cache: dict[str, str]) -> tuple[list[str], str | None]:
    """The `primary_key` lines, or why the table has none to offer."""
    if table.primary_key:
        named = f" {table.primary_key_name}" if table.primary_key_name else ""
        return [
            f"  # primary_key: the source's primary key constraint{named}",
            f"  primary_key: {_flow([cache[c] for c in table.primary_key])}",
        ], None
    if table.unique_keys:
        chosen = min(
            table.unique_keys,
            key=lambda u: (any(table.column(c).nullable for c in u.columns), len(u.columns)),
        )
        nullable = [c for c in chosen.columns if table.column(c).nullable]
        return [
            f"  # primary_key: no primary key constraint; the {_unique_key_words(chosen)}",
            *([f"  # ({', '.join(nullable)} may be NULL there: check)"] if nullable else []),
            f"  primary_key: {_flow([cache[c] for c in chosen.columns])}",
        ], None
    return [
        "  primary_key: []  # TODO: the cache column(s) that identify a row",
    ], f"no primary key or unique index on {table.where}; choose one"


def _unique_key_words(key: UniqueKey) -> str:
    return f"{key.kind} {key.name}" if key.name else key.kind


def _watermark(table: ReflectedTable, cache: dict[str, str], jde: JdeFacts | None) -> list[str]:
    if jde is not None and jde.times:
        day, time = jde.times
        if day in table.leading_index_columns:
            index = [f"  # ({day} leads an index)"]
        elif table.zonemaps:
            index = [f"  # ({day}: zonemaps serve its ranges, no index needed)"]
        else:
            advice = f"each incremental scans the table; index ({day}, {time})"
            index = [f"  # (no index starts with {day}: {advice})"]
        return [
            f"  # updated_at: JDE's {day} (Julian date) + {time} (HHMMSS), combined by jde.times",
            *index,
            f"  updated_at: {JDE_TIMES_COLUMN}",
        ]
    if jde is not None and (day := f"{jde.prefix}{JDE_UPDATED_DATE}") in jde.julian:
        return [
            f"  # updated_at: JDE's {day}, a Julian date (no time column beside it: whole days)",
            f"  updated_at: {cache[day]}",
        ]
    stamps = [c for c in table.columns if c.type is not None and c.type.kind is Kind.DATETIME]
    ranged = [c for c in stamps if table.serves_ranges(c.name)]
    if chosen := next((c for c in ranged if CHANGE_NAME.search(c.name)), None):
        if chosen.name in table.leading_index_columns:
            why = f"an indexed {chosen.type_text} named as a change time"
        else:
            why = f"a {chosen.type_text} named as a change time (zonemaps serve its ranges)"
        return [f"  # updated_at: {chosen.name}, {why}", f"  updated_at: {cache[chosen.name]}"]
    mass_only = "  # Without `updated_at` only `mass` (a full load) runs."
    if unindexed := next((c for c in stamps if CHANGE_NAME.search(c.name)), None):
        return [
            f"  # updated_at: none chosen: {unindexed.name} looks like a change time, but no index starts",
            "  # with it, so each daily/hourly sync would scan the table. Index it, then uncomment:",
            f"  # updated_at: {cache[unindexed.name]}",
            mass_only,
        ]
    if stamps:
        names = ", ".join(c.name for c in stamps)
        return [
            f"  # updated_at: none chosen: no timestamp ({names}) is "
            + ("named as a" if table.zonemaps else "both indexed and named as a"),
            "  # change time (a creation time would miss updates).",
            mass_only,
        ]
    return ["  # updated_at: none: the table has no timestamp column.", mass_only]


def _column_lines(columns: list[ScaffoldedColumn]) -> list[str]:
    pairs = [(f"    {_scalar(c.source)}: {_column_value(c)}", "; ".join(c.notes)) for c in columns]
    width = max(len(text) for text, _ in pairs) + 2
    return [
        "  columns:  # source -> cache name, every source column (its type and why, alongside)",
        *(f"{text.ljust(width)}# {note}" for text, note in pairs),
    ]


def _jde_lines(table: ReflectedTable, jde: JdeFacts, dictionary: Dictionary | None) -> list[str]:
    lines = ["  jde:"]
    if jde.julian:
        lines.append(f"    julian_dates: {_flow(list(jde.julian))}")
    if jde.times:
        lines.append(f"    times: {{{JDE_TIMES_COLUMN}: {_flow(list(jde.times))}}}")
    if jde.decimals:
        pairs = ", ".join(f"{_scalar(c)}: {n}" for c, n in jde.decimals.items())
        lines.append(f"    implied_decimals: {{{pairs}}}  # display decimals from {dictionary.origin}")  # type: ignore[union-attr]
    elif dictionary is None:
        lines.append(
            "    # implied_decimals: none: no data dictionary (F9210 or --dictionary); never guessed"
        )
    if jde.trim:
        lines.append("    trim: true  # CHAR columns: JDE pads text with trailing spaces")
    if len(lines) == 1:
        return ["  # jde: nothing to convert (no Julian date, no CHAR column)"]
    return lines


def _flow(values: list[str]) -> str:
    return "[" + ", ".join(_scalar(v) for v in values) + "]"


def _column_value(column: ScaffoldedColumn) -> str:
    """The cache name, or with the dictionary's description `{name: ..., description: ...}`."""
    if column.description is None:
        return _scalar(column.cache)
    return f"{{name: {_scalar(column.cache)}, description: {_scalar(column.description)}}}"


def _scalar(value: str) -> str:
    """`value` as YAML writes it safely anywhere, flow collections included (quoted if need be)."""
    dumped = yaml.safe_dump([value], default_flow_style=True, width=10**9, allow_unicode=True).strip()
    return dumped[1:-1]
