"""docs/types.md is the type contract as the dialects implement it: regenerated here, never stale."""

from __future__ import annotations

from pathlib import Path

from sync_assets.dialects.type_table import SOURCES, markdown, rows

DOC = Path(__file__).resolve().parent.parent / "docs" / "types.md"


def test_the_committed_type_table_matches_the_code():
    assert DOC.read_text() == markdown(), (
        "docs/types.md is stale: run `python -m sync_assets.dialects.type_table > docs/types.md`"
    )


def test_every_source_dialect_has_rows_and_refuses_what_it_cannot_map():
    for source in SOURCES:
        table = rows(source)
        assert len(table) == len(SOURCES[source])
    refused = {source: [r[0] for r in rows(source) if r[1].startswith("refused")] for source in SOURCES}
    assert refused["oracle"] == ["`INTERVAL DAY TO SECOND`"]
    assert refused["postgresql"] == ["`interval`"]
    assert refused["duckdb"] == ["`STRUCT(...)`"]


def test_lossy_mappings_are_flagged_where_a_cache_lacks_digits():
    oracle = {r[0]: r for r in rows("oracle")}
    sqlite, postgresql, duckdb, mssql = 3, 4, 5, 6
    timestamp9 = oracle["`TIMESTAMP(9)`"]
    assert "⚠" in timestamp9[postgresql] and "⚠" in timestamp9[mssql] and "⚠" in timestamp9[sqlite]
    assert timestamp9[duckdb] == "TIMESTAMP_NS"
    number = oracle["`NUMBER`"]
    assert number[postgresql] == "NUMERIC" and number[sqlite] == "TEXT"
    assert number[mssql].startswith("DECIMAL(38, 10) ⚠")
