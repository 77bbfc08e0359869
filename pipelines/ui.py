"""`make ui`: the MLflow UI over annlab's store, opened on the experiment's training runs.

    python -m pipelines.ui [--port 5000] [--experiment annlab]

Starts `mlflow ui` on 127.0.0.1 only, waits until it answers, and prints the link that opens
the experiment's runs in MLflow's model-training view (the UI otherwise lands on its GenAI
pages). When MLFLOW_TRACKING_URI names a tracking server, prints that server's link instead.
"""

from __future__ import annotations

import argparse

from omegaconf import OmegaConf

from annlab import services, tracking
from annlab.errors import reported
from annlab.paths import CONF_DIR, default_paths


@reported
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--experiment",
                        default=OmegaConf.load(CONF_DIR / "tracking" / "mlflow.yaml").experiment)
    args = parser.parse_args(argv)
    services.check_port_free("127.0.0.1", args.port, "UI_PORT")
    services.ui(tracking.resolve_uri(None, default_paths().store), args.experiment, args.port)


if __name__ == "__main__":
    main()
