"""The YAML table catalog: models, placeholders and the loader."""
