"""Run `pipelines.run` (a sweep with the joblib launcher) and print, as JSON on the last line,
which heavy libraries the launching process had imported when it launched the jobs and at
the end. Used by tests/test_sweep.py.

    python tests/scripts/sweep_imports.py sweep=default ...
"""

import json
import runpy
import sys

import joblib

HEAVY = {"sklearn", "matplotlib"}
seen: dict[str, list[str]] = {}
run_jobs = joblib.Parallel.__call__


def _heavy() -> list[str]:
    return sorted({name.split(".")[0] for name in sys.modules} & HEAVY)


def run_jobs_and_note(self, iterable):
    seen["at launch"] = _heavy()
    return run_jobs(self, iterable)


# Hydra's joblib launcher runs its jobs through joblib.Parallel (Hydra loads launcher plugins
# as unregistered modules, so the launcher class itself cannot be instrumented).
joblib.Parallel.__call__ = run_jobs_and_note

sys.argv = ["pipelines.run", *sys.argv[1:]]
try:  # as `python -m pipelines.run ...` (Hydra finds conf/ relative to the main module)
    runpy.run_module("pipelines.run", run_name="__main__", alter_sys=True)
finally:
    seen["at end"] = _heavy()
    print(json.dumps(seen))
