"""`make figures [EXPERIMENT=figure2]`: the post's Figures 2 and 3, rebuilt from an experiment
config, tracked like any run and copied to <paths.figures>/<experiment>/ (same bytes every time).

    python -m pipelines.figures experiment=figure2
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from annlab.config import ConfigError
from annlab.tracking import TrackingError
from pipelines import fail

# The post's numbering: Figure 2 is the boundary animation, Figure 3 the misclassification curve.
POST_NAMES = {"boundary": "figure2.gif", "boundary_final": "figure2_final.png",
              "misclassification": "figure3.png"}


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from annlab.network import DivergenceError
    from annlab.pipeline import run_experiment
    from pipelines.run import name_after_defaults

    hc = HydraConfig.get()
    experiment = hc.runtime.choices.get("experiment") or "default"
    name_after_defaults(cfg)
    try:
        result = run_experiment(cfg, hc.overrides.task, Path(hc.runtime.output_dir),
                                entry_point="pipelines/figures.py")
    except (ConfigError, TrackingError, DivergenceError) as err:
        fail(f"error: {err}", err)
    except KeyboardInterrupt as err:
        fail(str(err) or "interrupted (Ctrl-C)", err, code=130)
    target = Path(cfg.paths.figures) / experiment
    target.mkdir(parents=True, exist_ok=True)
    print(f"experiment {experiment}: run {result.run_name} ({result.run_id}), "
          f"training accuracy {result.scores['train_accuracy']:.4f}")
    for key, name in POST_NAMES.items():
        path = shutil.copyfile(result.figures[key], target / name)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        print(f"  {path}  sha256 {digest}")


if __name__ == "__main__":
    main()
