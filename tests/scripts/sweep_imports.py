"""Run `pipelines.run` (a sweep with the joblib launcher) and print, as JSON on the last line,
which heavy libraries the launching process had imported when it handed over to the jobs and
at the end. Used by tests/e2e/test_sweep.py.

    python tests/scripts/sweep_imports.py sweep=default ...
"""

import json
import runpy
import sys

from hydra_plugins.annlab_sweeper import _workers

HEAVY = {"sklearn", "matplotlib"}
seen: dict[str, list[str]] = {}
ready = _workers._ready  # what the launch calls first (Hydra reloads the sweeper's module)


def _heavy() -> list[str]:
    return sorted({name.split(".")[0] for name in sys.modules} & HEAVY)


def launching():
    seen.setdefault("at launch", _heavy())
    ready()


_workers._ready = launching

sys.argv = ["pipelines.run", *sys.argv[1:]]
try:  # as `python -m pipelines.run ...` (Hydra finds conf/ relative to the main module)
    runpy.run_module("pipelines.run", run_name="__main__", alter_sys=True)
finally:
    seen["at end"] = _heavy()
    print(json.dumps(seen))
