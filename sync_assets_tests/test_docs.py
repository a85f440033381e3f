"""The documentation a newcomer reads: a short README, and links between the docs that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT = 10_000  # bytes: what it is, the Quickstart, a minimal catalog, the databases, where next
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "RESULTS.md"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a page (lower case, punctuation dropped, spaces as hyphens,
    repeats numbered), and explicit `id="..."`s."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found: set[str] = set(re.findall(r'id="([^"]+)"', text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_the_readme_stays_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, (
        f"README.md is {size:,} bytes; move detail into docs/ (limit {README_LIMIT:,})"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_anchor(page: Path):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_docs_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"docs/{p.name}" not in readme]
    assert not unlinked, f"README.md links no {', '.join(unlinked)}"


def test_the_readme_catalog_loads(tmp_path: Path):
    from sync_assets.catalog.loader import load_catalog

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The table catalog") :]
    yaml_block = section[
        section.index("```yaml\n") + len("```yaml\n") : section.index("\n```", section.index("```yaml"))
    ]
    (tmp_path / "catalog.yaml").write_text(yaml_block, encoding="utf-8")
    catalog = load_catalog(tmp_path / "catalog.yaml")
    assert [t.name for t in catalog.tables] == ["work_orders"]
