"""A deadline on opening a connection, for drivers whose own timeout leaves part of the login unbounded."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any


class LoginTimeout(TimeoutError):
    """The server accepted the TCP connection but did not complete the login in time: transient."""


def connect_within(connect: Callable[[], Any], timeout: float | None, *, grace: float = 0) -> Any:
    """`connect()`, given up after `timeout` seconds in all (TCP, handshake and login), plus
    `grace` for a driver that applies the timeout itself and reports it better.

    The connect runs on a daemon thread, so a driver stuck in C (it releases the GIL) cannot hold
    the sync: a connection that succeeds after the deadline is closed at once, and a thread that
    never returns ends with the process. The driver's own errors reach the caller unchanged.
    """
    if not timeout:
        return connect()
    lock, finished = threading.Lock(), threading.Event()
    outcome: list[tuple[Any, BaseException | None]] = []
    abandoned = False

    def attempt() -> None:
        try:
            result: tuple[Any, BaseException | None] = (connect(), None)
        except BaseException as err:  # handed to the caller
            result = (None, err)
        with lock:
            if not abandoned:
                outcome.append(result)
                finished.set()
                return
        if result[0] is not None:
            with contextlib.suppress(Exception):
                result[0].close()

    threading.Thread(target=attempt, name="sync_assets connect", daemon=True).start()
    try:
        finished.wait(timeout + grace)
    finally:  # on time, late, or interrupted (Ctrl-C): a connection made from now on is closed
        with lock:
            abandoned = not outcome
    if abandoned:
        msg = f"the server accepted the connection but did not complete the login within {timeout:g} s"
        raise LoginTimeout(msg)
    connection, error = outcome[0]
    if error is not None:
        raise error
    return connection
