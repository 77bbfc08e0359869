"""Thin Hydra entry points (``python -m pipelines.<name>``); the only code importing Hydra.

Importing the package registers annlab's config schema, so that ``conf/config.yaml`` can
start its defaults list with ``annlab_schema``.
"""

import atexit
import gc
import os
import signal
import sys
import threading
from typing import NoReturn


def _report_interrupt(kind, value, traceback) -> None:
    """A Ctrl-C that nothing caught: one while an entry point imports, before anything is
    recorded (each stage that records catches its own, records it and says so). One line, not a
    traceback; with HYDRA_FULL_ERROR=1 the traceback. The process still ends as interrupted."""
    if issubclass(kind, KeyboardInterrupt) and os.environ.get("HYDRA_FULL_ERROR") != "1":
        print(str(value) or "interrupted (Ctrl-C)", file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(kind, value, traceback)


sys.excepthook = _report_interrupt  # first: the imports below take a while

_pressed: list[int] = []


def _note_interrupt(signum, frame) -> None:
    _pressed.append(signum)


def defer_interrupts() -> None:
    """Until :func:`interruptible`, a Ctrl-C is noted, not raised: while an entry point starts,
    Hydra and OmegaConf compose and check its configs (~1 s), and an exception raised inside
    them comes out as a bogus config error or a traceback. Only for the main thread of a
    process whose Ctrl-C is not already handled or ignored (a background job ignores it)."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _note_interrupt)


def interruptible() -> None:
    """From here a Ctrl-C raises KeyboardInterrupt again, which the stages that record catch
    (the run or the sweep ends KILLED, and they say so); one pressed since
    :func:`defer_interrupts` is raised here."""
    if signal.getsignal(signal.SIGINT) is _note_interrupt:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if _pressed:
        _pressed.clear()
        raise KeyboardInterrupt


from hydra.core.config_store import ConfigStore  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from annlab.config import Config  # noqa: E402

ConfigStore.instance().store(name="annlab_schema", node=Config)
# An entry point then imports ~300 MB of long-lived objects (MLflow, scikit-learn, matplotlib):
# collecting them over and over cost ~1.5 s of CPU per process. Collect rarely instead; the
# work itself makes few reference cycles.
gc.set_threshold(100_000, 50, 100)
# At exit the interpreter collects garbage while it tears the modules down: walks through all of
# those objects, ~0.9 s. atexit runs the last registered first: MLflow's, joblib's and
# multiprocessing's handlers (registered later, when those load) have closed what they own by
# the time this one freezes everything still alive out of those walks; logging's flush, which
# runs after it, does not need them.
atexit.register(gc.freeze)


def freeze_what_stays() -> None:
    """Collect once, then leave every object still alive (imports, caches, the store's client)
    out of later collections. joblib's workers (loky, without psutil) collect after every job
    longer than a second: through the ~390,000 objects the imports made, 0.23 s a job. What the
    jobs make afterwards is still collected."""
    gc.collect()
    gc.freeze()


def joblib_workers(config) -> int | None:
    """The worker processes the joblib launcher runs (joblib's count for its ``n_jobs``: -1 is
    every core), or None under another launcher."""
    launcher = OmegaConf.select(config, "hydra.launcher", default=None)
    if launcher is None or not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return None
    from joblib import effective_n_jobs

    return effective_n_jobs(launcher.get("n_jobs") or 1)


def serve_forks(config) -> None:
    """With the joblib launcher, start the process its workers fork from, now.

    loky's workers normally start as fresh interpreters that each import what a job needs (~3 s
    of CPU apiece, beside the launching process on the same cores). With the "forkserver" start
    method, which loky supports, one server process imports it once (``annlab.preload``: the
    pipeline, not the store, no sockets; a Ctrl-C meanwhile is the launching process's to
    report) and every worker is a fork of it. Started from the sweeper's setup,
    before the launching process imports MLflow, the two import side by side. The server
    starts with joblib's caps on each worker's threads (OMP_NUM_THREADS and the like: cores //
    workers) in its environment, which loky cannot pass to processes it does not start itself.
    The start method is this process's from then on (a launching process runs one sweep)."""
    n_jobs = joblib_workers(config)
    if n_jobs is None or n_jobs == 1:  # another launcher, or joblib runs the jobs here
        return
    import multiprocessing
    from multiprocessing import forkserver, resource_tracker

    from joblib._parallel_backends import LokyBackend
    from joblib.externals.loky.backend.context import set_start_method

    multiprocessing.set_forkserver_preload(["annlab.preload"])
    set_start_method("forkserver", force=True)
    caps = LokyBackend()._prepare_worker_env(n_jobs)
    saved = {name: os.environ.get(name) for name in caps}
    os.environ.update(caps)
    # The server starts with Ctrl-C blocked (a child inherits its parent's signal mask) until
    # annlab.preload can leave quietly on one: Python's own start and multiprocessing's imports
    # come first. A Ctrl-C meanwhile waits, for this process as for the server. The server
    # starts multiprocessing's resource tracker first, which unblocks Ctrl-C once it has: start
    # the tracker before blocking.
    resource_tracker.ensure_running()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def fail(message: str, err: BaseException, code: int = 1) -> NoReturn:
    """Stop with one line for a fault or bad input annlab can name; with HYDRA_FULL_ERROR=1
    (Hydra's own switch, `--verbose` for `make reproduce`) the traceback instead."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)
