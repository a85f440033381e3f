"""New `tables:` items written into a catalog's text, which stays as it was around them.

The file is never rewritten through a YAML dumper (which would drop its comments and reorder its
keys): YAML's own parse says where the `tables:` list ends, and the items go in after its last
line, at its indentation; `tables:` is added at the end if the catalog has none.
"""

from __future__ import annotations

from collections.abc import Callable

import yaml

from sync_assets.errors import CatalogError

DEFAULT_ITEM_INDENT = 2
NULL_TAG = "tag:yaml.org,2002:null"


def item_indent(text: str) -> int:
    """The column of the `-` of the catalog's table items (2 when it has none yet)."""
    found = _tables(text)
    if found is None or not isinstance(found[1], yaml.SequenceNode) or not found[1].value:
        return DEFAULT_ITEM_INDENT
    return _dash_column(text, found[1].value[0])


def append_items(text: str, render: Callable[[int], str]) -> str:
    """`text` with the items `render(indent)` writes added at the end of its `tables:` list."""
    found = _tables(text)
    if not text.endswith("\n") and text:
        text += "\n"
    if found is None:
        return text + "tables:\n" + render(DEFAULT_ITEM_INDENT)
    key, value = found
    empty_list = isinstance(value, yaml.SequenceNode) and value.flow_style and not value.value
    if empty_list or (isinstance(value, yaml.ScalarNode) and value.tag == NULL_TAG):
        # `tables:`, `tables: ~` or `tables: []`: that value goes, the items follow the key's line.
        text = text[: value.start_mark.index] + text[value.end_mark.index :]
        return _insert_after(text, key.start_mark.line, render(DEFAULT_ITEM_INDENT))
    if not isinstance(value, yaml.SequenceNode):
        msg = f"line {key.start_mark.line + 1}: `tables:` is not a list; cannot add tables to it"
        raise CatalogError(msg)
    if value.flow_style:
        msg = (
            f"line {key.start_mark.line + 1}: `tables:` is a [flow] list; write it as a block "
            "list (one `- name:` item per table) to add tables to it"
        )
        raise CatalogError(msg)
    return _insert_after(text, _last_line(value), render(_dash_column(text, value.value[0])))


def _insert_after(text: str, line: int, items: str) -> str:
    lines = text.splitlines(keepends=True)
    if line < len(lines):
        lines[line] = lines[line].rstrip() + "\n"
    return "".join(lines[: line + 1]) + items + "".join(lines[line + 1 :])


def _tables(text: str) -> tuple[yaml.Node, yaml.Node] | None:
    """The `tables` key and value nodes of the catalog's top-level mapping."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return None
    if not isinstance(root, yaml.MappingNode):
        msg = "the catalog is not a mapping of connections, cache and tables"
        raise CatalogError(msg)
    return next(((k, v) for k, v in root.value if k.value == "tables"), None)


def _last_line(node: yaml.Node) -> int:
    """The last line (0-based) holding any of the node's text: where a block node's content ends
    (its own end mark lies on the next key's line)."""
    if isinstance(node, yaml.ScalarNode) or getattr(node, "flow_style", False):
        end = node.end_mark
        return end.line if end.column > 0 else end.line - 1
    children = [v for pair in node.value for v in pair] if isinstance(node, yaml.MappingNode) else node.value
    return max((_last_line(c) for c in children), default=node.start_mark.line)


def _dash_column(text: str, item: yaml.Node) -> int:
    line = text.splitlines()[item.start_mark.line]
    return line.rfind("-", 0, item.start_mark.column)
