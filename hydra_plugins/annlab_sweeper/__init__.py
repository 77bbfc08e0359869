"""annlab's sweepers (Hydra loads sweepers only from the ``hydra_plugins`` namespace).

Hydra ``Sweeper`` classes through Hydra's public plugin interface: ``setup`` keeps what Hydra
hands over and starts nothing; ``sweep`` starts the process joblib's workers fork from
(:mod:`._workers`) and hands the command line to the grid (:mod:`._grid`) or the study
(:mod:`._study`), imported only then, reporting their errors in one line
(:func:`annlab.errors.reported`). Jobs run on whichever launcher is configured (basic, joblib,
ray). (No ``from __future__ import annotations``: Hydra executes plugin modules without
registering them, and the dataclasses below then cannot resolve string annotations.)
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.annlab_sweeper.GridSweeper"
    params: dict[str, str] | None = None  # key -> comma-separated values


@dataclass
class TuneSweeperConf:
    _target_: str = "hydra_plugins.annlab_sweeper.TuneSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="annlab_grid", node=GridSweeperConf,
                             provider="annlab")
ConfigStore.instance().store(group="hydra/sweeper", name="annlab_tune", node=TuneSweeperConf,
                             provider="annlab")


class GridSweeper(Sweeper):
    """Every combination of the comma-separated values in ``params`` and on the command line,
    as one tracked, resumable sweep (:mod:`._grid`)."""

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None
        self.workers_ready = lambda: None  # waits for joblib's workers' server (._workers)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """A job's config (without the ``hydra`` node), composed as its launcher will."""
        return next(self.compose_all([overrides]))

    def compose_all(self, points: Sequence[Sequence[str]]) -> Iterator[DictConfig]:
        from ._compose import compose_jobs

        return compose_jobs(self.hydra_context.config_loader, self.config, points)

    def launch(self, jobs: Sequence[Sequence[str]], first_index: int = 0) -> Sequence[Any]:
        self.workers_ready()
        return self.launcher.launch(jobs, initial_job_idx=first_index)

    def sweep(self, arguments: list[str]) -> Any:
        from annlab.errors import reported

        return reported(self._start)(arguments)

    def _start(self, arguments: list[str]) -> Any:
        from . import _workers

        _workers.check(self.config)
        # First: the workers' server imports beside this process's own checks.
        self.workers_ready = _workers.start(self.config)
        return self.run(arguments)

    def run(self, arguments: list[str]) -> Any:
        from . import _grid

        return _grid.sweep(self, [*(f"{k}={v}" for k, v in self.params.items()), *arguments])


class TuneSweeper(GridSweeper):
    """An Optuna study through ask-and-tell: the search space is ``tune.space`` in the config
    (:mod:`annlab.study`); the command line's overrides set the other keys."""

    def run(self, arguments: list[str]) -> Any:
        from . import _study

        return _study.sweep(self, arguments)
