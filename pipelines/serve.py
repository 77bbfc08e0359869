"""`make serve [MODEL=annlab-<dataset>] [RUN_ID=...]`: the champion of a registered model (or a
run's model) behind MLflow's own scoring server, on 127.0.0.1, until Ctrl-C; prints a `curl`
line that works. A busy port or one out of range is refused in one line naming SERVE_PORT.

    python -m pipelines.serve [--model annlab-moons] [--run-id ID] [--port 5002]
"""

from __future__ import annotations

import argparse

from omegaconf import OmegaConf

from annlab import services, tracking
from annlab.config import DataConfig
from annlab.errors import reported
from annlab.paths import CONF_DIR, default_paths
from annlab.rules import DATASETS
from annlab.tracking.registry import model_name


@reported
def main(argv: list[str] | None = None) -> None:
    experiment = OmegaConf.load(CONF_DIR / "tracking" / "mlflow.yaml").experiment
    parser = argparse.ArgumentParser(prog="make serve", description=__doc__.split("\n")[0])
    default = model_name(experiment, DATASETS[DataConfig.name].function)  # annlab-moons
    parser.add_argument("--model", default=default,
                        help="registered model whose champion to serve (annlab-<dataset>)")
    parser.add_argument("--run-id", help="serve this run's model instead")
    parser.add_argument("--port", type=int, default=5002)
    args = parser.parse_args(argv)
    services.check_port_free("127.0.0.1", args.port, "SERVE_PORT")  # before the model
    services.serve_model(tracking.resolve_uri(None, default_paths().store), args.model,
                         args.run_id, args.port)


if __name__ == "__main__":
    main()
