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

from annlab.errors import reported
from annlab.paths import make_dir
from pipelines.run import run

# The post's numbering: Figure 2 is the boundary animation, Figure 3 the misclassification curve.
POST_NAMES = {"boundary": "figure2.gif", "boundary_final": "figure2_final.png",
              "misclassification": "figure3.png"}


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@reported
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    target = make_dir("paths.figures", cfg.paths.figures) / (
        hc.runtime.choices.get("experiment") or "default")
    result = run(cfg, hc.overrides.task, Path(hc.runtime.output_dir),
                 entry_point="pipelines/figures.py")
    target.mkdir(exist_ok=True)
    for key, name in POST_NAMES.items():
        path = shutil.copyfile(result.figures[key], target / name)
        print(f"  {path}  sha256 {hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
