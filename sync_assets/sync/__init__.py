"""The data path: read the source in batches, stage them in the cache, swap or merge."""
