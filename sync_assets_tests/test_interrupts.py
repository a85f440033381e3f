"""The signal handling around a sync (sync/interrupts.py), with real signals in pytest's main thread."""

from __future__ import annotations

import signal

import pytest

from sync_assets.sync.interrupts import InterruptWatch, interrupts_deferred, is_interrupt


def test_an_interrupt_inside_the_deferred_block_arrives_after_it():
    """The second interrupt of a cancellation waits until its recording is done."""
    recorded = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        signal.raise_signal(signal.SIGINT)
        recorded.append("cancelled")  # the statements that record the attempt still run
    assert recorded == ["cancelled"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _RaisesOnCollection:
    """An interrupt that lands in a __del__, as one landed in SQLAlchemy's weakref callback."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


def test_an_interrupt_swallowed_during_collection_is_raised_at_the_next_check():
    with InterruptWatch() as watch:
        _RaisesOnCollection()  # collected at once: Python prints "Exception ignored in" and goes on
        assert watch.pending == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            watch.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_an_interrupt_the_checks_pass():
    with InterruptWatch() as watch:
        watch.check()
    assert watch.pending is None


def test_interrupts_are_told_by_their_class_or_their_chain():
    assert is_interrupt(KeyboardInterrupt()) and is_interrupt(SystemExit(1))
    assert not is_interrupt(ValueError()) and not is_interrupt(GeneratorExit())
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            msg = "rollback refused: another command is already in progress"
            raise RuntimeError(msg)  # noqa: B904
    except RuntimeError as err:
        assert is_interrupt(err), "an error raised while handling an interrupt"
