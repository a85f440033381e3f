"""`sync-assets`: sync status, catalog validation, watermark resets and scaffolded tables from a terminal.

One module per command; `context` holds what they share (the catalog, the cache, the instance).
"""

from __future__ import annotations

import click

from sync_assets.cli.add_table import add_table
from sync_assets.cli.reset import reset
from sync_assets.cli.status import status
from sync_assets.cli.validate import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Look at and steer the syncs of a sync_assets catalog."""


main.add_command(status)
main.add_command(validate)
main.add_command(reset)
main.add_command(add_table)
