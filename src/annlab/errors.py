"""annlab's one failure policy: the library raises these; entry points report them.

Every fault or bad input annlab can name is an :class:`AnnlabError` whose message is the one
line a user reads. :func:`reported` wraps each entry point (a ``main``, a sweeper's ``sweep``):
it prints that line, or the lines of an interrupted sweep, and exits with the error's code
(130 for an interrupt). ``HYDRA_FULL_ERROR=1`` (Hydra's own switch) shows the traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


class AnnlabError(Exception):
    """A fault or bad input, told in one line (``str(err)``); ``exit_code`` for the shell."""

    exit_code = 1


class InvalidGrid(AnnlabError):
    """A sweep or study command line that cannot make a grid or a study."""


class Stopped(AnnlabError):
    """A sweep or study stopped early (a signal, a lost worker): ``lines`` say what was closed
    and how to resume."""

    exit_code = INTERRUPTED

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))


class Unfinished(AnnlabError):
    """A sweep whose summary is written but some of whose configs did not finish."""


def full_traceback() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def reported(fn: Callable[..., T] | None = None, *, error_code: int | None = None):
    """``fn`` as an entry point: an :class:`AnnlabError` or an interrupt becomes its message on
    stderr and the process's exit code, instead of a traceback. ``error_code`` replaces the
    errors' own codes (``make reproduce`` exits 2 when it cannot compare)."""
    if fn is None:
        return functools.partial(reported, error_code=error_code)

    @functools.wraps(fn)
    def entry(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (AnnlabError, KeyboardInterrupt) as err:
            if full_traceback():
                raise
            if isinstance(err, KeyboardInterrupt):
                message, code = str(err) or "interrupted (Ctrl-C)", INTERRUPTED
            else:
                message = str(err) if isinstance(err, Stopped) else f"error: {err}"
                code = err.exit_code if error_code is None else error_code
            print(message, file=sys.stderr, flush=True)
            sys.exit(code)

    return entry
