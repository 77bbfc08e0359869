"""`make run`: one experiment through every stage, tracked in MLflow.

    python -m pipelines.run model.activation=relu train.epochs=500
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from annlab.config import ConfigError
from annlab.network import DivergenceError
from annlab.pipeline import run_experiment
from annlab.tracking import TrackingError


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    hc = HydraConfig.get()
    try:
        result = run_experiment(cfg, hc.overrides.task, Path(hc.runtime.output_dir))
    except ConfigError as err:
        sys.exit(f"error: {err}")
    except TrackingError as err:
        sys.exit(f"error: {err}")
    except DivergenceError as err:
        sys.exit(f"error: run failed, {err} (recorded as FAILED in MLflow)")
    figures = result.figures["boundary"].parent
    print(f"run {result.run_name} ({result.run_id}) finished")
    print(f"  test accuracy {result.scores['test_accuracy']:.4f}  "
          f"train {result.scores['train_accuracy']:.4f}  val {result.scores['val_accuracy']:.4f}")
    print(f"  figures in {figures}")
    print(f"  tracked in {result.uri} (experiment id {result.experiment_id}); "
          "browse with `make ui`")
    return result.scores


if __name__ == "__main__":
    main()
