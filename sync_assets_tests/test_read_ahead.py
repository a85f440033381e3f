"""The read-ahead thread: batches in order, errors handed over, memory bounded, the reader closed."""

from __future__ import annotations

import threading

import polars as pl
import pytest

from sync_assets.batches import read_ahead


def frames(count, *, taken, fail_at=None, closed=None):
    """Frames 0..count-1; each checks, as it is made, that the reader is at most two batches
    ahead of the consumer (one in the queue, one in hand)."""
    try:
        for i in range(count):
            assert i <= taken[0] + 2, f"batch {i} read with only {taken[0]} taken"
            if i == fail_at:
                msg = f"read failed at batch {i}"
                raise OSError(msg)
            yield pl.DataFrame({"i": [i]})
    finally:
        if closed is not None:
            closed.set()


def test_batches_arrive_in_order_and_bounded():
    taken = [0]
    seen = []
    for frame in read_ahead(frames(50, taken=taken)):
        seen.append(frame.item())
        taken[0] += 1
    assert seen == list(range(50))


def test_a_read_error_reaches_the_consumer_after_the_batches_before_it():
    taken, seen = [0], []
    with pytest.raises(OSError, match="read failed at batch 3"):
        for frame in read_ahead(frames(10, taken=taken, fail_at=3)):
            seen.append(frame.item())
            taken[0] += 1
    assert seen == [0, 1, 2]


def test_a_consumer_that_stops_early_gets_the_reader_closed():
    closed = threading.Event()
    batches = read_ahead(frames(1000, taken=[0], closed=closed))
    assert next(batches).item() == 0
    batches.close()
    assert closed.wait(30), "the reader was never closed"
