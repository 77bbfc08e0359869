"""`python -m pipelines.run ...` with some of annlab's start-up settings switched off, so that
bench.py can measure what each one saves.

    python bench/without.py forkserver,gc sweep=default ...

``forkserver``: joblib's workers start as fresh interpreters (loky's default) instead of forks
of one server (hydra_plugins/annlab_sweeper/_workers.py). ``gc``: the garbage collector keeps
CPython's defaults (annlab/collector.py). joblib's workers run this file again as their main
module; the switches reach them in the environment.
"""

import os
import runpy
import sys

from annlab import collector
from hydra_plugins.annlab_sweeper import _workers

if __name__ == "__main__":
    os.environ["ANNLAB_BENCH_OFF"] = sys.argv.pop(1)
OFF = set(os.environ.get("ANNLAB_BENCH_OFF", "").split(","))
if "forkserver" in OFF:
    _workers.start = lambda config: (lambda: None)
if "gc" in OFF:
    collector.settle = collector.keep_after_first_job = lambda: None

if __name__ == "__main__":
    sys.argv = ["pipelines.run", *sys.argv[1:]]
    runpy.run_module("pipelines.run", run_name="__main__", alter_sys=True)
