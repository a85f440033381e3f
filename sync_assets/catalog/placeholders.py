"""`${VAR}` and `${VAR:-default}` placeholders, resolved from the environment when a sync runs.

Placeholders keep secrets out of the catalog, out of Dagster's resource config and so out of the UI:
only the variable names are ever stored or shown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from sync_assets.errors import MissingEnvironmentVariable

_PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def variables(template: str) -> list[str]:
    """Names of the environment variables a template refers to."""
    return [m.group("name") for m in _PLACEHOLDER.finditer(template)]


def has_placeholders(template: str) -> bool:
    return _PLACEHOLDER.search(template) is not None


def substitute(template: str, replacement: str) -> str:
    """The template with every placeholder replaced by `replacement` (for shape checks)."""
    return _PLACEHOLDER.sub(replacement, template)


def resolve(
    template: str,
    *,
    connection: str | None = None,
    table: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Fill in the placeholders; a variable that is unset and has no default is an error."""
    env = os.environ if environ is None else environ

    def _value(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        value = env.get(name)
        if value is None:
            if default is None:
                raise MissingEnvironmentVariable(name, connection=connection, table=table)
            return default
        return value

    return _PLACEHOLDER.sub(_value, template)
