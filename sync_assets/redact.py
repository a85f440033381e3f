"""Scrub secrets from text before it reaches a log, sync_log or the Dagster UI."""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?P<at>@)")
_KEY_VALUE_PASSWORD = re.compile(r"(?i)(?P<head>\b(?:password|pwd)\s*=\s*)(?P<password>'[^']*'|[^\s;]+)")
MASK = "***"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask known secret values and anything shaped like a password in a URL or DSN."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)
    return _KEY_VALUE_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)
