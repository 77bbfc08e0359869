"""annlab's sweeper (Hydra loads sweepers only from the ``hydra_plugins`` namespace).

A Hydra ``Sweeper`` through Hydra's public plugin interface: it composes jobs with Hydra's own
config loader and runs them with whichever launcher is configured (basic, joblib, ray). What
the sweep does with them lives in :mod:`pipelines.sweep`. (No ``from __future__ import
annotations``: Hydra executes plugin modules without registering them, and the dataclass below
then cannot resolve string annotations.)
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict


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
    as one tracked, resumable sweep (see :mod:`pipelines.sweep`)."""

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """A job's config (without the ``hydra`` node), composed as its launcher will."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    def launch(self, jobs: Sequence[Sequence[str]], first_index: int = 0) -> Sequence[Any]:
        return self.launcher.launch(jobs, initial_job_idx=first_index)

    def sweep(self, arguments: list[str]) -> Any:
        from pipelines.sweep import run_grid

        return run_grid(self, [*(f"{k}={v}" for k, v in self.params.items()), *arguments])


class TuneSweeper(GridSweeper):
    """An Optuna study through ask-and-tell: the search space is ``tune.space`` in the config
    (see :mod:`pipelines.tune`); the command line's overrides set the other keys."""

    def sweep(self, arguments: list[str]) -> Any:
        from pipelines.tune import run_study

        return run_study(self, arguments)
