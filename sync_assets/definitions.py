"""The code location: the catalog named by SYNC_ASSETS_CATALOG (or the demo) as Definitions.

Loading needs no database and no secret; connections resolve their placeholders at run time.
"""

import gc

from sync_assets.assets.factory import build_definitions
from sync_assets.catalog.loader import load_catalog

# Every Dagster process builds the whole catalog's definitions, which live as long as it: built with
# the collector off, then frozen out of its reach, so no collection or exit walks them again
# (seconds for 500 tables: docs/performance.md, "Measured choices").
_collecting = gc.isenabled()
gc.disable()
try:
    defs = build_definitions(load_catalog())
    defs.get_repository_def().asset_graph  # noqa: B018  (cached on first use; built inside the window)
finally:
    gc.freeze()
    if _collecting:
        gc.enable()
