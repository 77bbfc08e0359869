"""Print one hash of everything a config produces (curves, weights, figure bytes).

    python tests/scripts/digest.py <conf dir> <out dir> [overrides...]

Run in a fresh process by tests/e2e/test_reproducibility.py, with different BLAS thread counts.
"""

import hashlib
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

import pipelines  # noqa: F401  (registers the config schema)
from annlab.pipeline import rebuild
from annlab.spec import resolve

with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    cfg = compose(config_name="config", overrides=sys.argv[3:])
outcome = rebuild(resolve(cfg), Path(sys.argv[2]))
if outcome.failure is not None:
    raise outcome.failure
digest = hashlib.sha256(outcome.history.to_numpy().tobytes())
for array in outcome.model.coefs_ + outcome.model.intercepts_:
    digest.update(array.tobytes())
for name in sorted(outcome.figures):
    digest.update(outcome.figures[name].read_bytes())
print(digest.hexdigest())
