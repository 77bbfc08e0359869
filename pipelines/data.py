"""`make data [ARGS='data=iris']`: a configured dataset's splits written as three CSV files with a
header (the post's sample files), and the command that trains from them.

    python -m pipelines.data data=iris
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from annlab.errors import reported
from annlab.paths import make_dir
from annlab.spec import resolve


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@reported
def main(cfg: DictConfig) -> None:
    from annlab.data import write_files

    spec = resolve(cfg)
    out_dir = make_dir("paths.data", spec.paths["data"]) / spec.data.label
    written = write_files(spec.data, spec.seed, out_dir)
    shown = {split: os.path.relpath(path) for split, path in written.items()}
    rows = "/".join(str(n) for n in spec.data.split_sizes()) if len(spec.data.files) != 3 \
        else "as given"
    print(f"wrote the splits of {spec.data.label} ({rows} train/validation/test rows, "
          f"{spec.data.shape.n_features} features):")
    for path in shown.values():
        print(f"  {path}")
    target = spec.data.target or "target"
    print("train from them: make run ARGS='data=file " + " ".join(
        f"data.{split}={path}" for split, path in shown.items()) + f" data.target={target}'")


if __name__ == "__main__":
    main()
