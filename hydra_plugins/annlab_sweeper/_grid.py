"""`make sweep`: a grid of configs as one tracked, resumable sweep.

In the launching process, before any job starts, :func:`plan` composes every point of the grid
as its launcher will and checks it (a bad value or a repeated config stops the sweep with one
line, nothing created). :func:`sweep` then creates the store and the experiment and opens the
sweep's parent run, resuming an earlier one of the same name and grid, and decides here what
still needs to run: a config with a FINISHED child under that parent (same
``annlab.config_hash``) is reported "already done" and not launched again. When the jobs end
the summary goes onto the parent (:mod:`annlab.sweep_report`); a sweep stopped early closes
what is open and says how to resume (:func:`annlab.multirun.launching`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from annlab import multirun, names, sweep_report, tracking
from annlab.config import config_hash, dataset_shape, run_name, split_sizes, validate
from annlab.errors import InvalidGrid
from annlab.names import Status

from ._compose import expand


@dataclass
class Grid:
    points: list[list[str]]  # each job's overrides
    swept: dict[str, list[str]]  # the keys that vary, with their values
    hashes: list[str]  # each point's annlab.config_hash
    labels: list[str]  # each point's run name
    n_val: int  # the smallest validation split of the grid
    hash: str  # of the whole grid: with the sweep's name, what its parent is found by

    @property
    def by_hash(self) -> dict[str, str]:
        return dict(zip(self.hashes, self.labels))


def plan(sweeper, arguments: list[str]) -> Grid:
    """Every point of the grid, composed and checked; raises before anything is created."""
    points, swept = expand(arguments)
    *configs, baseline = sweeper.compose_all([*points, []])  # the default config, too
    for cfg in configs:
        validate(cfg)
    hashes = [config_hash(cfg) for cfg in configs]
    if len(set(hashes)) < len(configs):
        raise InvalidGrid("the sweep repeats a config; each grid point must differ")
    labels = [run_name(cfg, baseline) for cfg in configs]
    # A grid over a key that names leave out: tell its runs apart by their config hash.
    labels = [f"{n}-{h[:6]}" if labels.count(n) > 1 else n for n, h in zip(labels, hashes)]
    n_val = min(split_sizes(dataset_shape(c.data)["n_samples"], c.data.train_fraction,
                            c.data.val_fraction)[1] for c in configs)
    grid_hash = hashlib.sha256(",".join(sorted(hashes)).encode()).hexdigest()[:16]
    return Grid(points, swept, hashes, labels, n_val, grid_hash)


def sweep(sweeper, arguments: list[str]) -> list[Any]:
    config: DictConfig = sweeper.config
    uri = tracking.resolve_uri(config.tracking.uri, config.paths.store)
    grid = plan(sweeper, arguments)
    name = config.tracking.sweep or "grid"
    parent_name, total = f"sweep-{name}-{grid.hash[:8]}", len(grid.points)
    multirun.check_cluster(config, uri)
    experiment = tracking.open(uri, config.tracking.experiment)
    sweep_dir = Path(config.hydra.sweep.dir)

    def open_parent() -> multirun.Parent:
        return experiment.parent_run({names.SWEEP: name, names.SWEEP_GRID: grid.hash},
                                     parent_name, "pipelines/sweep.py",
                                     {names.SWEEP_SIZE: str(total)})

    with multirun.launching(experiment, open_parent, parent_name, "sweep",
                            "finished configs are not run again") as (parent, resumed):
        done = {r.config_hash: r for r in experiment.children(parent.run_id)
                if r.status == Status.FINISHED}
        todo = [k for k, chash in enumerate(grid.hashes) if chash not in done]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / "multirun.yaml")
        print(f"{'resuming' if resumed else 'starting'} sweep {name!r}: {total} configs, "
              f"{len(todo)} to run; parent run {parent_name} ({parent.run_id})", flush=True)
        for k, chash in enumerate(c for c in grid.hashes if c in done):
            print(multirun.progress(k + 1, total, done[chash].run_name, "already done",
                                    done[chash].metrics), flush=True)
        jobs = [multirun.job_overrides(grid.points[k], parent, uri, grid.labels[k])
                for k in todo]
        with multirun.reporting(experiment, parent, total, len(done)):
            returns = sweeper.launch(jobs) if jobs else []
        experiment.store.check_reachable("the sweep's summary is not written; rerun the same "
                                         "command once it answers", patient=True)
        sweep_report.write(experiment, parent, parent_name, grid.by_hash, grid.swept,
                           grid.n_val, sweep_dir / "summary", multirun.results(returns))
    return [returns]
