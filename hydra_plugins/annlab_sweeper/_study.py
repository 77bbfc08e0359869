"""`make tune`: the study's command line resolved and handed to :func:`annlab.study.run`.

A bad setting (an empty or inverted range, a range a key cannot take, an unknown sampler or
pruner, a comma-separated grid) stops here, with one line, before anything is created.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from annlab import cluster, study
from annlab.errors import InvalidGrid
from annlab.spec import resolve

from ._compose import expand


def parallel(config: DictConfig) -> int:
    """Trials to run at once, the study's batch: the launcher's n_jobs (all cores for -1),
    else one per core. The same seed and batch give the same study (:mod:`annlab.study`)."""
    n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    if n_jobs is not None and n_jobs > 0:
        return int(n_jobs)
    if OmegaConf.select(config, "hydra.launcher._target_", default="").endswith("BasicLauncher"):
        return 1
    return os.cpu_count() or 1


def sweep(sweeper, arguments: list[str]) -> list[Any]:
    config: DictConfig = sweeper.config
    points, swept = expand(arguments)
    if swept:
        raise InvalidGrid(f"{', '.join(swept)}: make tune samples tune.space, it does not grid "
                          "comma-separated values (that is make sweep)")
    base = resolve(sweeper.compose(points[0]))
    url = study.storage_url(base.tune, base.tracking.uri)
    cluster.check_cluster(config, base.tracking.uri)
    return study.run(base, points[0], url, parallel(config), sweeper.launch,
                     Path(config.hydra.sweep.dir) / "summary")
