"""The embedded demo: a generated JDE-flavoured SQLite source and the catalog that caches it."""
