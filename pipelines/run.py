"""`make run`, `make sweep`, `make tune`: one experiment through every stage, tracked in MLflow;
with a sweep or tune overlay, a Hydra multirun whose jobs come back here one by one.

    python -m pipelines.run model.activation=relu train.epochs=500
    python -m pipelines.run sweep=default            # the grid, see conf/sweep/default.yaml
    python -m pipelines.run tune=default             # the study, see conf/tune/default.yaml
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from annlab.errors import reported
from annlab.spec import resolve


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:  # a job that annlab's sweeper launched: it reports itself
        from annlab import job  # the pipeline: not for a sweep's launching process

        return job.run(resolve(cfg), hc.overrides.task, Path(hc.runtime.output_dir))
    return run(cfg, hc.overrides.task, Path(hc.runtime.output_dir))


@reported
def run(cfg: DictConfig, overrides: list[str], out_dir: Path,
        entry_point: str = "pipelines/run.py"):
    """One tracked run, named by what differs from the default config; prints where it is."""
    from annlab.pipeline import run_experiment  # not for a sweep's launching process

    spec = resolve(cfg, baseline=resolve(compose(config_name="config")))
    with progress_bar(spec.train.epochs) as watch:
        result = run_experiment(spec, overrides, out_dir, entry_point=entry_point, watch=watch)
    s = result.scores
    print(f"run {result.run_name} ({result.run_id}) finished\n"
          f"  test accuracy {s['test_accuracy']:.4f}  (train {s['train_accuracy']:.4f}, "
          f"validation {s['val_accuracy']:.4f})\n"
          f"  figures in {result.figures['boundary'].parent}\n"
          f"  tracked in {result.uri}, experiment {spec.tracking.experiment!r}; "
          "browse with `make ui`")
    return result


@contextlib.contextmanager
def progress_bar(epochs: int, mininterval: float = 0.25):
    """On a terminal, tqdm's bar of the epochs trained, with the latest training loss and
    validation misclassification, elapsed and remaining time (redrawn at most 4 times a
    second); nothing otherwise. Yields the per-epoch callback."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=epochs, unit="epoch", mininterval=mininterval, leave=False,
              dynamic_ncols=True) as bar:
        def watch(model) -> None:
            h = model.history_
            bar.set_postfix_str(f"train loss {h['train_loss'][-1]:.4f}, val "
                                f"misclassification {h['val_misclassification'][-1]:.3f}",
                                refresh=False)
            bar.update()
        yield watch


if __name__ == "__main__":
    main()
