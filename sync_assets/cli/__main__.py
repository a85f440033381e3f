"""`python -m sync_assets.cli`: the `sync-assets` command without the installed script."""

from sync_assets.cli import main

main(prog_name="sync-assets")
