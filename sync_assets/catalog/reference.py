"""The reference tables of docs/catalog.md, generated from the catalog models.

docs/catalog.md is hand-written prose with generated regions: each
`<!-- fields: Model -->` ... `<!-- /fields -->` pair is replaced by that model's heading, docstring
and a table of its keys (name, type, default, the field's `description=`). Every model a catalog
can hold must have exactly one region, so a new model or field cannot stay undocumented.

    python -m sync_assets.catalog.reference           # rewrite docs/catalog.md's regions
    python -m sync_assets.catalog.reference --check   # exit 1 if docs/catalog.md is stale

A test (sync_assets_tests/test_catalog_reference.py) keeps the committed file current.
"""

from __future__ import annotations

import enum
import inspect
import re
import sys
import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sync_assets.catalog.models import IDENTIFIER, Catalog

DOC = Path(__file__).resolve().parents[2] / "docs" / "catalog.md"
REGION = re.compile(r"<!-- fields: (?P<model>\w+) -->\n.*?<!-- /fields -->", re.DOTALL)
_SCALARS = {
    str: "text",
    int: "integer",
    float: "number",
    bool: "`true` or `false`",
    timedelta: "duration",
    Any: "any",
}
_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def models(root: type[BaseModel] = Catalog) -> list[type[BaseModel]]:
    """Every model reachable from `root` through its fields, in the order first met."""
    found: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in found:
            return
        found.append(model)
        for field in model.model_fields.values():
            for nested in _nested_models(field.annotation):
                visit(nested)

    visit(root)
    return found


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _nested_models(arg)]


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def _constraints(metadata: list[Any]) -> tuple[str | None, list[str]]:
    """A named shape (`name` for an identifier) and the bounds, from a field's or a type's metadata."""
    bounds: list[str] = []
    pattern = None
    max_length = min_length = None
    for item in metadata:
        if isinstance(item, FieldInfo):
            shape, more = _constraints(item.metadata)
            pattern = pattern or (IDENTIFIER if shape == "name" else None)
            bounds += more
            continue
        pattern = getattr(item, "pattern", None) or pattern
        if isinstance(item, annotated_types.MaxLen):
            max_length = item.max_length
        elif isinstance(item, annotated_types.MinLen):
            min_length = item.min_length
        elif isinstance(item, annotated_types.Gt):
            bounds.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            bounds.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Lt):
            bounds.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.Le):
            bounds.append(f"≤ {item.le}")
    if pattern == IDENTIFIER:
        return "name", bounds
    if max_length == 1:
        bounds.append("one character")
    elif max_length is not None:
        bounds.append(f"at most {max_length} long")
    if min_length:
        bounds.append("not empty")
    return None, bounds


def type_text(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A field's type in words, with links to the sections of nested models."""
    metadata = list(metadata or [])
    if get_origin(annotation) is Annotated:
        base, *more = get_args(annotation)
        return type_text(base, [*metadata, *more])
    shape, bounds = _constraints(metadata)
    suffix = f" ({', '.join(bounds)})" if bounds else ""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(type_text(a) for a in options) + suffix
    if origin is Literal:
        return _one_of([f"`{v}`" for v in get_args(annotation)])
    if origin is list:
        (item,) = get_args(annotation)
        what = "list of " + type_text(item)
        return what + (" (at least one)" if "not empty" in bounds else "")
    if origin is dict:
        key, value = get_args(annotation)
        what = f"mapping of {type_text(key)} to {type_text(value)}"
        return what + (" (at least one)" if "not empty" in bounds else "")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _one_of([f"`{member.value}`" for member in annotation])
    if shape == "name":
        return "name" + (f" ({', '.join(bounds)})" if bounds else "")
    if annotation in (int, float) and bounds:
        return f"{_SCALARS[annotation]} {' and '.join(b for b in bounds)}"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation))) + suffix


def _one_of(options: list[str]) -> str:
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    return _value_text(value)


def _value_text(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return "not set"
    if isinstance(value, BaseModel):
        changed = {k: v for k, v in value.model_dump().items() if v != type(value)().model_dump()[k]}
        if not changed:
            return "its defaults"
        return "`{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in changed.items()) + "}`"
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        unit, size = next((u, s) for u, s in _UNITS if seconds % s == 0)
        return f"{seconds / size:g}{unit}"
    if isinstance(value, str):
        return f'"{value}"' if value == "" or not value.replace("_", "").isalnum() else value
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def model_section(model: type[BaseModel]) -> str:
    """A model's heading, docstring and key table, as Markdown."""
    doc = inspect.cleandoc(model.__doc__ or "")
    lines = [f"### {model.__name__}", ""]
    if doc:
        lines += [" ".join(paragraph.split()) + "\n" for paragraph in doc.split("\n\n")]
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        cells = [f"`{key}`", type_text(field.annotation, field.metadata), default_text(field)]
        cells.append(field.description or "")
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def undocumented() -> list[str]:
    """Fields without a `description=` and models without a docstring: the reference would be blank."""
    missing = [m.__name__ for m in models() if not (m.__doc__ or "").strip()]
    missing += [f"{m.__name__}.{n}" for m in models() for n, f in m.model_fields.items() if not f.description]
    return missing


def render(text: str) -> str:
    """`text` (docs/catalog.md) with every region regenerated; raises ValueError when a model has
    no region, or two, or a region names no catalog model."""
    known = {m.__name__: m for m in models()}
    named = [match["model"] for match in REGION.finditer(text)]
    problems = [f"no catalog model is named '{n}'" for n in named if n not in known]
    problems += [f"'{n}' has {named.count(n)} regions" for n in dict.fromkeys(named) if named.count(n) > 1]
    problems += [f"'{n}' has no `<!-- fields: {n} -->` region" for n in known if n not in named]
    if problems:
        raise ValueError(f"{DOC.name}: " + "; ".join(problems))

    def replace(match: re.Match[str]) -> str:
        name = match["model"]
        return f"<!-- fields: {name} -->\n{model_section(known[name])}<!-- /fields -->"

    return REGION.sub(replace, text)


def main(argv: list[str]) -> int:
    current = DOC.read_text(encoding="utf-8")
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print(f"{DOC} is stale: run `python -m sync_assets.catalog.reference`", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        DOC.write_text(fresh, encoding="utf-8")
        print(f"{DOC}: regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
