"""Every signal rule of annlab, in one place.

Three rules, by what is at stake when Ctrl-C (SIGINT), SIGTERM or SIGHUP arrives:

- **Nothing recorded yet** (a command importing, Hydra composing its configs): the process
  leaves at once, with one line; a worker process of a sweep leaves silently, since its
  launching process gets the same Ctrl-C and reports it (:func:`leave_until_recording`).
- **Recording** (a run, a sweep's or a study's launch): the signal raises :class:`Interrupted`
  where the main thread is, so that whatever is open is closed as KILLED and says so
  (:func:`raised`).
- **A step that must not be cut in two** (an Optuna storage transaction, closing a run): the
  signal is held and raised when the step is done (:func:`held`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

REASONS = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)",
           signal.SIGHUP: "hung up (SIGHUP)"}
CTRL_C = REASONS[signal.SIGINT]
EXIT_CODE = 130


class Interrupted(KeyboardInterrupt):
    """A signal from :data:`REASONS`; ``reason`` says which, the message what was done."""

    def __init__(self, reason: str, message: str | None = None):
        super().__init__(message or reason)
        self.reason = reason


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _leave(signum, frame) -> None:
    if multiprocessing.parent_process() is None:  # the command itself, not one of its workers
        os.write(sys.stderr.fileno(), f"{REASONS[signum]}\n".encode())
    os._exit(EXIT_CODE)


def leave_until_recording() -> None:
    """Install the first rule for this process (an entry point calls it before its imports).
    Signals someone else already handles or ignores (a background job's SIGINT) are left so."""
    if not _main_thread():
        return
    for sig in REASONS:
        if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(sig, _leave)


_listening: list[list[str]] = []  # one list of reasons per raised() block under way
_holding: list[list[str]] = []  # one list per held() block under way


def _raise(signum, frame) -> None:
    reason = REASONS[signum]
    for received in _listening + _holding:
        received.append(reason)
    if not _holding:
        raise Interrupted(reason)


@contextmanager
def raised() -> Iterator[list[str]]:
    """Within, the signals raise :class:`Interrupted` (the second rule). Yields the reasons
    received here, which stay known even if a library catches the exception and raises another
    in its place. Off the main thread (where no signal is delivered) it changes nothing."""
    received: list[str] = []
    if not _main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, _raise) for sig in REASONS}
    _listening.append(received)
    try:
        yield received
    finally:
        _listening.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def held() -> Iterator[None]:
    """Within, a signal that :func:`raised` would raise is held; it is raised on leaving the
    block, unless an exception is already on its way out (a run being closed)."""
    received: list[str] = []
    _holding.append(received)
    try:
        yield
    finally:
        _holding.pop()  # blocks nest: the last one begun ends first
    if received and not _holding and sys.exc_info()[1] is None:
        raise Interrupted(received[-1])
