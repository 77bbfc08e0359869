"""Thin Hydra entry points (``python -m pipelines.<name>``); the only code importing Hydra.

Importing the package registers annlab's config schema, so that ``conf/config.yaml`` can
start its defaults list with ``annlab_schema``.
"""

from hydra.core.config_store import ConfigStore

from annlab.config import Config

ConfigStore.instance().store(name="annlab_schema", node=Config)
