"""Run one config per seed 0..n-1 in n processes at once, each tracked; print each run's id.

    python tests/scripts/concurrent_runs.py <conf dir> <out dir> <n> [overrides...]

Used by tests/e2e/test_scaleout.py. The processes are forked once the imports are done, so that
they really overlap.
"""

import json
import os
import sys
import traceback
from pathlib import Path

from hydra import compose, initialize_config_dir

import pipelines  # noqa: F401  (the config schema)
from annlab.pipeline import run_experiment
from annlab.spec import resolve

conf, out, n, *overrides = sys.argv[1:]
with initialize_config_dir(config_dir=conf, version_base="1.3"):
    specs = [resolve(compose(config_name="config", overrides=[*overrides, f"seed={k}"]))
             for k in range(int(n))]
children = []
for k, spec in enumerate(specs):  # imports are done: each child only runs and tracks
    if (pid := os.fork()) == 0:
        code = 1
        try:
            result = run_experiment(spec, [], Path(out) / str(k))
            # One write of the whole line: the processes share the pipe.
            sys.stdout.write(json.dumps({"seed": k, "run_id": result.run_id}) + "\n")
            sys.stdout.flush()
            code = 0
        except BaseException:
            traceback.print_exc()  # os._exit below would drop it
        finally:
            os._exit(code)
    children.append(pid)
sys.exit(max(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children))
