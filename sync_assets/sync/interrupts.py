"""Holding SIGINT and SIGTERM back for the few statements that record how an attempt ended."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block are delivered when it ends.

    A cancelled sync is interrupted twice: a terminal sends SIGINT to the whole process group,
    and Dagster forwards the interrupt to the step once more. The second one used to cut short
    the recording of the first and leave the sync_log row `running`. Masking the signals in the
    main thread (pthread_sigmask) would not do: the kernel hands them to another thread, and
    Python still runs the handler in the main thread. So the handlers are swapped instead (only
    the main thread can; elsewhere this does nothing), and the signals re-raised afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    # A handler installed outside Python (None) cannot be put back, so its signal is left alone.
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    previous = {signum: handler for signum, handler in previous.items() if handler is not None}
    for signum in previous:
        signal.signal(signum, remember)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)  # the restored handler acts on it now
