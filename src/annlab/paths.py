"""The checkout's location and the ``paths`` config group, for code that runs without Hydra.

``conf/paths/default.yaml`` decides every path; its ``${annlab.repo:}`` resolver, registered
here, is the checkout. ``python -m annlab.paths KEY...`` prints them (the Makefile uses it).
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"

OmegaConf.register_new_resolver("annlab.repo", lambda: str(REPO_ROOT), replace=True)
# ${annlab.unless_env:VAR,value}: null when the environment variable VAR is set, else value.
OmegaConf.register_new_resolver(
    "annlab.unless_env", lambda var, value: None if os.environ.get(var) else value, replace=True)


@cache
def default_paths() -> DictConfig:
    """The resolved ``paths`` group, as a composed config would hold it."""
    paths = OmegaConf.load(CONF_DIR / "paths" / "default.yaml")
    OmegaConf.resolve(paths)
    OmegaConf.set_readonly(paths, True)
    return paths


def tracking_uri(configured: str | None, default: str | None) -> str | None:
    """``tracking.uri`` if set, else ``$MLFLOW_TRACKING_URI``, else ``default`` (paths.store); a
    sqlite file given by a relative path is where the command was run from (MLflow's artifact
    locations and a sweep's jobs need it absolute)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or default
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path.cwd() / uri.removeprefix('sqlite:///')}"
    return uri


def make_dir(key: str, path: str | Path) -> Path:
    """``path``, made with its parents, for annlab to write in; else one line naming ``key``."""
    from annlab.config import ConfigError  # it imports this module for the resolver

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as err:
        raise ConfigError(key, str(path), "a directory annlab can create and write in "
                          f"({err.strerror or err})") from None
    return path


class MakeDirs(Callback):
    """Hydra's run or sweep directory made before Hydra makes it, so that one it cannot make
    is said in one line naming the setting (conf/config.yaml lists this callback)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._make(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._make(config, "sweep")

    @staticmethod
    def _make(config: DictConfig, mode: str) -> None:
        # Hydra turns a callback's exception into a warning and goes on: exit here instead
        from annlab.errors import reported

        reported(MakeDirs._check)(config, mode)

    @staticmethod
    def _check(config: DictConfig, mode: str) -> None:
        where = config.hydra[mode].dir
        base = config.paths.runs if mode == "run" else config.paths.multiruns
        key = (f"paths.{'runs' if mode == 'run' else 'multiruns'}" if where.startswith(base)
               else f"hydra.{mode}.dir")
        make_dir(key, base if key.startswith("paths.") else where)


if __name__ == "__main__":
    print(" ".join(str(default_paths()[key]) for key in sys.argv[1:]))
