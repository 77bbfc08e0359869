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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from annlab import cluster, multirun, names, tracking
from annlab.errors import InvalidGrid
from annlab.names import Status
from annlab.spec import RunSpec, resolve

from ._compose import expand

LAUNCH_PART = 64  # jobs handed to the launcher at a time
MAX_POINTS = 10_000  # configs in one sweep: beyond it, a study searches the space


@dataclass
class Grid:
    points: list[list[str]]  # each job's overrides
    swept: dict[str, list[str]]  # the keys that vary, with their values
    specs: list[RunSpec]  # each point resolved
    labels: list[str]  # each point's run name
    hash: str  # of the whole grid: with the sweep's name, what its parent is found by

    @property
    def hashes(self) -> list[str]:
        return [spec.hash for spec in self.specs]

    @property
    def by_hash(self) -> dict[str, tuple[str, str]]:
        """Each point's config hash -> its run name and dataset."""
        return {spec.hash: (label, spec.data.label) for spec, label in zip(self.specs,
                                                                           self.labels)}

    @property
    def n_val(self) -> int:
        """The smallest validation split of the grid."""
        return min(spec.data.split_sizes()[1] for spec in self.specs)


def plan(sweeper, arguments: list[str]) -> Grid:
    """Every point of the grid, composed, checked and resolved; raises before anything is
    created."""
    points, swept = expand(arguments, MAX_POINTS)
    configs = sweeper.compose_all([[], *points])  # the default config, first, names the runs
    baseline = resolve(_without_paths(next(configs)))
    specs = [resolve(_without_paths(cfg), baseline) for cfg in configs]
    hashes = [spec.hash for spec in specs]
    if len(set(hashes)) < len(specs):
        raise InvalidGrid("the sweep repeats a config; each grid point must differ")
    # A grid over a key that names leave out: tell its runs apart by their config hash.
    counts = Counter(spec.name for spec in specs)
    labels = [f"{s.name}-{s.hash[:6]}" if counts[s.name] > 1 else s.name for s in specs]
    grid_hash = hashlib.sha256(",".join(sorted(hashes)).encode()).hexdigest()[:16]
    points = [_absolute_files(point, spec) for point, spec in zip(points, specs)]
    return Grid(points, swept, specs, labels, grid_hash)


def _without_paths(cfg: DictConfig) -> DictConfig:
    """Where files go is no business of the grid's (and costs to resolve, a thousand times)."""
    with open_dict(cfg):
        del cfg["paths"]
    return cfg


def _absolute_files(point: list[str], spec: RunSpec) -> list[str]:
    """The point with its data files named by their absolute paths, as resolved here: a job
    may run elsewhere than the directory the sweep was started from."""
    paths = {f.key: str(f.path) for f in spec.data.files}
    return [f"{key}={multirun.quoted(paths[key])}" if (key := o.split("=", 1)[0]) in paths
            else o for o in point]


def sweep(sweeper, arguments: list[str]) -> list[Any]:
    config: DictConfig = sweeper.config
    uri = tracking.resolve_uri(config.tracking.uri, config.paths.store)
    grid = plan(sweeper, arguments)
    name = config.tracking.sweep or "grid"
    parent_name, total = f"sweep-{name}-{grid.hash[:8]}", len(grid.points)
    cluster.check_cluster(config, uri)
    experiment = tracking.open(uri, config.tracking.experiment)
    sweep_dir = Path(config.hydra.sweep.dir)

    def open_parent() -> multirun.Parent:
        datasets = dict.fromkeys(spec.data.label for spec in grid.specs)
        return experiment.parent_run({names.SWEEP: name, names.SWEEP_GRID: grid.hash},
                                     parent_name, "pipelines/run.py",
                                     {names.SWEEP_SIZE: str(total),
                                      names.DATASET: ", ".join(datasets)}, exclusive=True)

    with multirun.launching(experiment, open_parent, parent_name, "sweep",
                            "finished configs are not run again") as (parent, resumed):
        done = {r.config_hash: r for r in experiment.children(parent.run_id)
                if r.status == Status.FINISHED}
        todo = [k for k, chash in enumerate(grid.hashes) if chash not in done]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / "multirun.yaml")
        print(f"{'resuming' if resumed else 'starting'} sweep {name!r}: {total} configs, "
              f"{len(todo)} to run; parent run {parent_name} ({parent.run_id})", flush=True)
        width = max(map(len, grid.labels))
        for k, chash in enumerate(c for c in grid.hashes if c in done):
            print(multirun.progress(k + 1, total, done[chash].run_name, "already done",
                                    done[chash].metrics, width=width), flush=True)
        jobs = [multirun.job_overrides(grid.points[k], parent, uri, grid.labels[k])
                for k in todo]
        results: dict[str, dict] = {}
        with multirun.reporting(experiment, parent, total, len(done), width):
            # In parts, keeping only what the summary needs of each: Hydra's records of a
            # job hold its whole config, and a thousand of them would fill the memory.
            for start in range(0, len(jobs), LAUNCH_PART):
                results |= multirun.results(sweeper.launch(jobs[start:start + LAUNCH_PART],
                                                           start))
        experiment.store.check_reachable("the sweep's summary is not written; rerun the same "
                                         "command once it answers", patient=True)
        from annlab import sweep_report  # its figures: not before the jobs start

        sweep_report.write(experiment, parent, parent_name, grid.by_hash, grid.swept,
                           grid.n_val, sweep_dir / "summary", results)
    return []
