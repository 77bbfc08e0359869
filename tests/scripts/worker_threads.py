"""Start joblib workers as a sweep's launching process does (the sweeper's fork server, then the
joblib launcher's loky backend) and print, as JSON, each worker's thread caps and BLAS/OpenMP
pool sizes. Used by tests/e2e/test_sweep.py.

    python tests/scripts/worker_threads.py N_JOBS
"""

import json
import os
import sys

from joblib import Parallel, delayed
from omegaconf import OmegaConf

from hydra_plugins.annlab_sweeper import _workers


def caps() -> dict:
    from threadpoolctl import threadpool_info

    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "pid": os.getpid(), "parent": os.getppid(),
            "pools": sorted({info["num_threads"] for info in threadpool_info()})}


if __name__ == "__main__":
    n_jobs = int(sys.argv[1])
    ready = _workers.start(OmegaConf.create({"hydra": {"launcher": {
        "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
        "n_jobs": n_jobs}}}))
    ready()
    print(json.dumps(Parallel(n_jobs=n_jobs, backend="loky")(
        delayed(caps)() for _ in range(n_jobs))))
