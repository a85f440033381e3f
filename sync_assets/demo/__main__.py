"""`python -m sync_assets.demo changes`: make the demo source look busy, for daily/hourly syncs."""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa

from sync_assets.catalog import placeholders
from sync_assets.catalog.loader import load_catalog
from sync_assets.demo.generator import ensure_demo_source, simulate_changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sync_assets.demo")
    parser.add_argument("command", choices=["create", "changes"])
    parser.add_argument("--fraction", type=float, default=0.01, help="share of work orders to update")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    demo = [c for c in catalog.connections.values() if c.demo]
    if not demo:
        print("the catalog has no `demo: true` connection", file=sys.stderr)
        return 2
    url = sa.make_url(placeholders.resolve(demo[0].url))
    ensure_demo_source(url)
    if args.command == "changes":
        updated, added = simulate_changes(url.database, fraction=args.fraction)  # type: ignore[arg-type]
        print(f"work_orders: {updated} updated, {added} inserted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
