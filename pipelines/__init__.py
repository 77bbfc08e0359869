"""Thin Hydra entry points (``python -m pipelines.<name>``); the only code importing Hydra.

Importing the package registers annlab's config schema, so that ``conf/config.yaml`` can
start its defaults list with ``annlab_schema``.
"""

import atexit
import gc
import os
import sys
from typing import NoReturn

from hydra.core.config_store import ConfigStore

from annlab.config import Config

ConfigStore.instance().store(name="annlab_schema", node=Config)
# An entry point then imports ~300 MB of long-lived objects (MLflow, scikit-learn, matplotlib):
# collecting them over and over cost ~1.5 s of CPU per process. Collect rarely instead; the
# work itself makes few reference cycles.
gc.set_threshold(100_000, 50, 100)
# At exit the interpreter collects garbage while it tears the modules down: walks through all of
# those objects, ~0.9 s. By the time this handler runs (atexit runs the last registered first,
# and this one is registered before MLflow's, joblib's or logging's) they have closed what they
# own, so everything still alive is frozen out of those walks.
atexit.register(gc.freeze)


def freeze_what_stays() -> None:
    """Collect once, then leave every object still alive (imports, caches, the store's client)
    out of later collections. joblib's workers (loky, without psutil) collect after every job
    longer than a second: through the ~390,000 objects the imports made, 0.23 s a job. What the
    jobs make afterwards is still collected."""
    gc.collect()
    gc.freeze()


def fail(message: str, err: BaseException, code: int = 1) -> NoReturn:
    """Stop with one line for a fault or bad input annlab can name; with HYDRA_FULL_ERROR=1
    (Hydra's own switch, `--verbose` for `make reproduce`) the traceback instead."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)
