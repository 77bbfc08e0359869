"""The garbage collector's settings for annlab's processes.

An entry point imports MLflow, scikit-learn, pandas and matplotlib: some 400,000 objects that
live until it exits. CPython's default thresholds walk them over and over, although the work
itself makes few reference cycles; while the interpreter shuts down it walks all of them once
more; and joblib's workers (loky, without psutil) collect after every job that took over a
second. ``make bench`` (``run``, ``sweep``) measures what these settings save.
"""

from __future__ import annotations

import atexit
import gc


def settle() -> None:
    """For an entry point's process (called once, from ``pipelines``): collect rarely; and at
    exit, once every atexit handler registered later (MLflow's, joblib's, multiprocessing's:
    they run first) has closed what it owns, freeze what is still alive out of the
    interpreter's last collections."""
    gc.set_threshold(100_000, 50, 100)
    atexit.register(gc.freeze)


_kept = False


def keep_after_first_job() -> None:
    """For a process that runs jobs one after another (called after each, by
    :func:`annlab.job.run`): after the first, collect once and freeze what is still alive
    (imports, caches, the store's client) out of later collections; what later jobs make is
    still collected."""
    global _kept
    if not _kept:
        _kept = True
        gc.collect()
        gc.freeze()
