"""One module per cache/source database behind the `Dialect` interface of `base`."""

from sync_assets.dialects.base import Capabilities, Dialect, get_dialect

__all__ = ["Capabilities", "Dialect", "get_dialect"]
