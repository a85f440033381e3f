"""Where a sync reads from: one interface (`base.Source`), one module per kind of source."""
