"""SIGINT and SIGTERM around a sync: none may be lost while it runs, none may cut short the record
of how it ended.

Both act only in the main thread, the one that runs Python's signal handlers; elsewhere they do
nothing. Neither imports Dagster: an interrupt is whatever the installed handler raises
(KeyboardInterrupt, Dagster's DagsterExecutionInterruptedError), never an Exception.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, FrameType | None], Any]


def is_interrupt(err: BaseException) -> bool:
    """An interrupt, or an error that an interrupt led to (a rollback refused because the
    interrupted statement was still running has the interrupt as its context)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        if not isinstance(current, Exception | GeneratorExit):
            return True
        chain.append(current)
        current = current.__cause__ or current.__context__
    return False


def _python_handlers() -> dict[int, Handler]:
    """The Python-level handlers of SIGINT and SIGTERM (SIG_DFL, SIG_IGN and handlers installed
    outside Python are left alone)."""
    handlers = {signum: signal.getsignal(signum) for signum in SIGNALS}
    return {signum: h for signum, h in handlers.items() if callable(h)}


class InterruptWatch:
    """Remembers a SIGINT or SIGTERM while a sync runs, so that `check()` raises it again if the
    handler's own exception was swallowed.

    A handler that raises does so wherever the main thread is, and Python drops an exception raised
    inside a weakref callback or __del__ during garbage collection ("Exception ignored in ..."):
    SQLAlchemy's event registry has such a callback, and a Ctrl-C that landed in it let the sync
    run on to its commit. The sync calls `check()` at every phase and batch.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self._previous: dict[int, Handler] = {}

    def __enter__(self) -> InterruptWatch:
        if threading.current_thread() is threading.main_thread():
            self._previous = _python_handlers()
            for signum, previous in self._previous.items():
                signal.signal(signum, self._wrap(previous))
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _wrap(self, previous: Handler) -> Handler:
        def remember_then_handle(signum: int, frame: FrameType | None) -> Any:
            # One interrupt ends the sync. A second (the group's signal, then Dagster's forwarded
            # one) could land while the first unwinds to where the cancellation is recorded, and
            # cut that short: it adds nothing, and check() raises the first if it was swallowed.
            if self.pending is not None:
                return None
            self.pending = signum
            return previous(signum, frame)

        return remember_then_handle

    def check(self) -> None:
        """Raise a remembered interrupt the way its handler does (Dagster's handler raises its
        interrupt; Python's default raises KeyboardInterrupt)."""
        if self.pending is not None and self.pending in self._previous:
            self._previous[self.pending](self.pending, None)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block are delivered when it ends.

    A cancelled sync is interrupted twice: a terminal sends SIGINT to the whole process group,
    and Dagster forwards the interrupt to the step once more. The second one used to cut short
    the recording of the first and leave the sync_log row `running`. Masking the signals in the
    main thread (pthread_sigmask) would not do: the kernel hands them to another thread, and
    Python still runs the handler in the main thread. So the handlers are swapped instead and
    the signals raised again afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    # Any handler Python can put back: a default SIGTERM still ends the process, after the block.
    previous = {signum: h for signum in SIGNALS if (h := signal.getsignal(signum)) is not None}
    for signum in previous:
        signal.signal(signum, remember)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)  # the restored handler acts on it now
