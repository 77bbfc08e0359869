"""Run `pipelines.run` (a sweep with the joblib launcher) and print, as JSON on the last line,
which heavy libraries the launching process had imported when it handed over to the jobs and
at the end. Used by tests/test_sweep.py.

    python tests/scripts/sweep_imports.py sweep=default ...
"""

import json
import runpy
import sys

import pipelines.sweep

HEAVY = {"sklearn", "matplotlib"}
seen: dict[str, list[str]] = {}
import_meanwhile = pipelines.sweep.import_meanwhile


def _heavy() -> list[str]:
    return sorted({name.split(".")[0] for name in sys.modules} & HEAVY)


def launching(*modules: str) -> None:
    # Called as the jobs are launched: from here on, the summary's modules load in the
    # background while the jobs run.
    seen["at launch"] = _heavy()
    import_meanwhile(*modules)


pipelines.sweep.import_meanwhile = launching

sys.argv = ["pipelines.run", *sys.argv[1:]]
try:  # as `python -m pipelines.run ...` (Hydra finds conf/ relative to the main module)
    runpy.run_module("pipelines.run", run_name="__main__", alter_sys=True)
finally:
    seen["at end"] = _heavy()
    print(json.dumps(seen))
