"""Entry points, one per user-facing job (``python -m pipelines.<name>``): each parses its command
line, calls one library function and prints what the user needs.

Importing the package first sets the start-up rule for signals (nothing is recorded yet, so a
Ctrl-C leaves at once with one line: :mod:`annlab.interrupts`) and the garbage collector's
settings (:mod:`annlab.collector`), then registers annlab's config schema, so that
``conf/config.yaml`` can start its defaults list with ``annlab_schema``.
"""

from annlab import collector, interrupts

interrupts.leave_until_recording()  # before the imports below, which take a while
collector.settle()

from hydra.core.config_store import ConfigStore  # noqa: E402

from annlab.config import Config  # noqa: E402

ConfigStore.instance().store(name="annlab_schema", node=Config)
