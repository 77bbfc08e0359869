"""annlab's adapter to joblib: the joblib launcher's workers as forks of one process that
imported what a job needs once.

loky starts each worker as a fresh interpreter that imports MLflow, scikit-learn, matplotlib and
the pipeline itself: seconds of CPU apiece, on the cores the jobs need, before the first job
can start. With multiprocessing's "forkserver" start method, which loky supports, one server
process imports them once, beside the launching process's own work, and every worker is a fork
of it. ``make bench`` (``sweep``) measures what this saves.

The server starts with Ctrl-C ignored, and so do the workers forked from it: a worker between
jobs (or the server, importing) leaves a Ctrl-C to the launching process, which stops the sweep
and reports it; a job under way installs its own handler (:func:`annlab.interrupts.raised`) and
ends its run KILLED. It starts with loky's own caps on each worker's BLAS and OpenMP threads
(cores // workers) in its environment, which loky cannot pass to processes it does not start.

Two calls reach inside joblib, pinned by tests/e2e/test_sweep.py: loky's ``set_start_method``
and the joblib loky backend's ``_prepare_worker_env`` (those caps).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from annlab import interrupts

# What a job's process imports (``pipelines.run`` itself is re-run in each worker as its main
# module, cheaply once these are loaded), and what a job's first run would import lazily: the
# model's flavour, the sqlite store's migrations, the image formats of its figures.
PRELOAD = ["pipelines", "hydra", "annlab.job", "mlflow.pyfunc",
           "mlflow.store.tracking.sqlalchemy_store", "alembic.command", "PIL.GifImagePlugin",
           "PIL.WebPImagePlugin", "pyarrow.pandas_compat"]


def check(config: DictConfig) -> None:
    """The joblib launcher's ``n_jobs`` is a count joblib takes, refused before anything runs."""
    launcher = OmegaConf.select(config, "hydra.launcher", default=None)
    if launcher is None or not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return
    n_jobs = launcher.get("n_jobs")
    if n_jobs is not None and (not isinstance(n_jobs, int) or n_jobs == 0):
        from annlab.config import ConfigError

        raise ConfigError("hydra.launcher.n_jobs", n_jobs, "a number of worker processes "
                          "(1, 2, ...), or -1 for one per core (-2: all but one, ...)")


def workers(config: DictConfig) -> int | None:
    """The worker processes the joblib launcher runs (joblib's count for its ``n_jobs``: -1 is
    every core), or None under another launcher."""
    launcher = OmegaConf.select(config, "hydra.launcher", default=None)
    if launcher is None or not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return None
    from joblib import effective_n_jobs

    return effective_n_jobs(launcher.get("n_jobs") or 1)


def start(config: DictConfig) -> Callable[[], None]:
    """Under the joblib launcher with more than one worker, start the server the workers fork
    from, now; the start method is this process's from then on (it runs one sweep). Returns
    what the launch calls first (:func:`_ready`)."""
    n_jobs = workers(config)
    if n_jobs is None or n_jobs == 1:  # another launcher, or joblib runs the jobs here
        return lambda: None
    from multiprocessing import forkserver

    from joblib._parallel_backends import LokyBackend
    from joblib.externals.loky.backend.context import set_start_method

    multiprocessing.set_forkserver_preload(PRELOAD)
    set_start_method("forkserver", force=True)
    caps = LokyBackend()._prepare_worker_env(n_jobs)
    saved_env = {name: os.environ.get(name) for name in caps}
    os.environ.update(caps)
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited through exec
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, saved)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value
    return _ready


def _ready() -> None:
    """Wait until the server has imported and forks at once, holding a Ctrl-C meanwhile: a
    worker it forked only after this process had stopped would find the pool gone and print a
    traceback. (A process forked from it and joined.)"""
    with interrupts.held():
        probe = multiprocessing.get_context("forkserver").Process(target=_nothing)
        probe.start()
        probe.join()


def _nothing() -> None:
    pass
