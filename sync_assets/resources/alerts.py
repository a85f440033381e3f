"""Where alerts go: always the Dagster log; optionally a Slack/Teams-compatible incoming webhook."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import dagster as dg
from pydantic import Field

from sync_assets.catalog import placeholders
from sync_assets.errors import SyncError

WEBHOOK_TIMEOUT_SECONDS = 10


class Alerter(dg.ConfigurableResource):
    """Sends one message per alert; a webhook failure is logged, never raised."""

    webhook_url: str | None = Field(default=None, description="${VAR} naming the webhook URL, if any")

    def send(self, title: str, lines: list[str], *, log: logging.Logger | dg.DagsterLogManager) -> bool:
        """Log the alert and post it; True if the webhook accepted it (or there is none)."""
        text = "\n".join([title, *lines])
        log.warning("ALERT %s", text)
        if not self.webhook_url:
            return True
        try:
            url = placeholders.resolve(self.webhook_url, connection="alerts")
        except SyncError as err:
            log.error("alert not posted: %s", err)
            return False
        body = json.dumps({"text": f"*{title}*\n" + "\n".join(lines), "title": title}).encode()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, TimeoutError) as err:
            # The URL may embed a token: name only the failure, never the address.
            log.error("alert not posted to the webhook: %s", type(err).__name__)
            return False
