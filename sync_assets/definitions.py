"""The code location: the catalog named by SYNC_ASSETS_CATALOG (or the demo) as Definitions.

Loading needs no database and no secret; connections resolve their placeholders at run time.
"""

from sync_assets.assets.factory import build_definitions
from sync_assets.catalog.loader import load_catalog

defs = build_definitions(load_catalog())
