"""The checkout's location and the ``paths`` config group, for code that runs without Hydra.

``conf/paths/default.yaml`` decides every path; its ``${annlab.repo:}`` resolver, registered
here, is the checkout. ``python -m annlab.paths KEY...`` prints them (the Makefile uses it).
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

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


if __name__ == "__main__":
    print(" ".join(str(default_paths()[key]) for key in sys.argv[1:]))
