"""Where a sync stands: the phase, the connection it talks to, what it has read.

Error messages, sync_log and cancellations read it; every step of the sync moves it on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sync_assets.sync.interrupts import InterruptWatch

Side = Literal["source", "cache"]


@dataclass
class Progress:
    phase: str = "connect"
    side: Side | None = "cache"  # None: a copy between the two
    mode: str | None = None  # full or incremental, once planned
    rows_read: int = 0
    committed: bool = False
    interrupts: InterruptWatch = field(default_factory=InterruptWatch)

    def at(self, phase: str, side: Side | None) -> None:
        """Enter `phase` on `side`: a checkpoint, where an interrupt that was swallowed is raised."""
        self.interrupts.check()
        self.phase, self.side = phase, side
