"""annlab's sweeper (Hydra loads sweepers only from the ``hydra_plugins`` namespace).

A Hydra ``Sweeper`` through Hydra's public plugin interface: it composes jobs with Hydra's own
config loader and runs them with whichever launcher is configured (basic, joblib, ray). What
the sweep does with them lives in :mod:`pipelines.sweep`. One shortcut reaches inside Hydra:
:func:`compose_jobs` applies value-only overrides with the loader's own override step
(hydra-core is pinned in requirements.lock; tests/test_sweeper.py holds it equal to the full
composition). (No ``from __future__ import
annotations``: Hydra executes plugin modules without registering them, and the dataclass below
then cannot resolve string annotations.)
"""

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
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


def compose_jobs(loader, master: DictConfig, points: Sequence[Sequence[str]]
                 ) -> list[DictConfig]:
    """Each point's job config (without the ``hydra`` node), as its launcher will compose it.

    Composing through Hydra's config loader costs ~70 ms a job. A point that only sets values
    (no config group, no ``hydra.`` key, no package) gets the same config from Hydra's own last
    step instead: its overrides applied to the composed base, as Hydra applies value overrides
    after composing the defaults list. Other points are composed in full.
    """
    repository = getattr(loader, "repository", None)
    parser = OverridesParser.create()
    base: DictConfig | None = None
    configs = []
    for point in points:
        parsed = parser.parse_overrides(list(point))
        if repository is None or not all(_sets_a_value(o, repository) for o in parsed):
            configs.append(_without_hydra(loader.load_sweep_config(master, list(point))))
            continue
        if base is None:
            base = _without_hydra(loader.load_sweep_config(master, []))
        cfg = copy.deepcopy(base)
        try:
            ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
        except Exception:  # Hydra's full composition has the last word, error included
            cfg = _without_hydra(loader.load_sweep_config(master, list(point)))
        configs.append(cfg)
    return configs


def _sets_a_value(override: Override, repository) -> bool:
    """Hydra's own test (its defaults list) for an override it applies to the composed config
    rather than to the defaults list; ``hydra.`` keys and packages are left to Hydra."""
    return (not override.is_hydra_override() and override.package is None
            and not override.is_sweep_override()
            and (isinstance(override.value(), dict)
                 or not repository.group_exists(override.key_or_group)))


def _without_hydra(cfg: DictConfig) -> DictConfig:
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


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
        from pipelines import interruptible, serve_forks

        interruptible()  # Hydra has composed the config: a Ctrl-C now interrupts the imports
        serve_forks(config)
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """A job's config (without the ``hydra`` node), composed as its launcher will."""
        return compose_jobs(self.hydra_context.config_loader, self.config, [overrides])[0]

    def compose_all(self, points: Sequence[Sequence[str]]) -> list[DictConfig]:
        return compose_jobs(self.hydra_context.config_loader, self.config, points)

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
