"""The signal rules of annlab.interrupts, in this process: raised where recording happens, held
across a step that must not be cut in two. (Each command's start, where a signal ends the
process at once, is tested end to end in tests/e2e/test_interrupts.py.)"""

import os
import signal
import threading

import pytest

from annlab import interrupts


@pytest.fixture(autouse=True)
def _main_thread():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are the main thread's")


def _signal(sig=signal.SIGINT):
    os.kill(os.getpid(), sig)
    for _ in range(10_000):  # Python runs the handler between bytecodes, soon after
        pass


@pytest.mark.parametrize("sig, reason", [(signal.SIGINT, "interrupted (Ctrl-C)"),
                                         (signal.SIGTERM, "terminated (SIGTERM)"),
                                         (signal.SIGHUP, "hung up (SIGHUP)")])
def test_a_signal_while_recording_raises_interrupted_with_its_reason(sig, reason):
    before = signal.getsignal(sig)
    with pytest.raises(interrupts.Interrupted) as info, interrupts.raised() as received:
        _signal(sig)
        pytest.fail("not interrupted")
    assert info.value.reason == reason and received == [reason]
    assert signal.getsignal(sig) is before  # handed back


def test_a_held_step_finishes_and_the_signal_is_raised_after_it():
    steps = []
    with pytest.raises(interrupts.Interrupted), interrupts.raised():
        with interrupts.held():
            _signal()
            steps.append("the step went on")
        steps.append("not reached")
    assert steps == ["the step went on"]


def test_a_signal_held_while_an_error_is_already_on_its_way_out_adds_nothing():
    with pytest.raises(RuntimeError, match="first"), interrupts.raised() as received:
        try:
            raise RuntimeError("first")
        except RuntimeError:
            with interrupts.held():  # closing what is open
                _signal()
            raise
    assert received == ["interrupted (Ctrl-C)"]


def test_nested_holds_raise_once_when_the_outer_one_ends():
    with pytest.raises(interrupts.Interrupted), interrupts.raised():
        with interrupts.held():
            with interrupts.held():
                _signal()
            _signal(signal.SIGTERM)  # still held
        pytest.fail("not raised at the end of the outer hold")
