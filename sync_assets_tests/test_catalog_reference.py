"""docs/catalog.md's reference is the catalog models as they are: regenerated here, never stale."""

from __future__ import annotations

import pytest

from sync_assets.catalog import reference
from sync_assets.catalog.models import TableSpec
from sync_assets.catalog.rest import RestConnectionSpec


def test_the_committed_catalog_reference_matches_the_models():
    assert reference.DOC.read_text(encoding="utf-8") == reference.render(
        reference.DOC.read_text(encoding="utf-8")
    ), "docs/catalog.md is stale: run `python -m sync_assets.catalog.reference`"


def test_every_catalog_model_and_field_is_described():
    assert reference.undocumented() == []


def test_a_model_without_a_region_or_an_unknown_region_is_refused():
    text = reference.DOC.read_text(encoding="utf-8")
    without = text.replace("<!-- fields: Deletes -->", "<!-- fields: Nothing -->")
    with pytest.raises(ValueError, match=r"no catalog model is named 'Nothing'.*'Deletes' has no"):
        reference.render(without)


def test_types_defaults_and_aliases_are_rendered_from_the_fields():
    section = reference.model_section(TableSpec)
    assert "| `name` | name | **required** |" in section
    assert "| `schema` | mapping of text to text | `{}` |" in section  # the alias, not `column_types`
    assert "| `format` | `csv`, `parquet` or `xlsx` | not set |" in section
    assert "[JdeOptions](#jdeoptions)" in section
    rest = reference.model_section(RestConnectionSpec)
    assert "| `retries` | [Retries](#retries) | `{max_retries: 0}` |" in rest  # a non-default factory
