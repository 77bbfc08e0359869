"""One experiment through every stage: data -> train -> evaluate -> plot, tracked in MLflow."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from annlab import plots, provenance, tracking, training
from annlab.config import config_hash, flatten, hidden_sizes, run_name, validate
from annlab.data import DataCache, Splits, derive_seed, make_splits
from annlab.model_io import save_weights
from annlab.network import NeuralNetClassifier
from annlab.provenance import REPO_ROOT


@dataclass
class RunResult:
    run_id: str
    run_name: str
    experiment_id: str
    uri: str
    scores: dict[str, float]
    figures: dict[str, Path] = field(default_factory=dict)
    skipped: bool = False  # a sweep job whose config already has a FINISHED child


def data_cache() -> DataCache:
    """outputs/cache of the repo, or $ANNLAB_CACHE_DIR."""
    return DataCache(Path(os.environ.get("ANNLAB_CACHE_DIR", REPO_ROOT / "outputs" / "cache")))


def build_data(cfg: DictConfig, cache: DataCache | None = None) -> Splits:
    """The data stage, through ``cache`` when given."""
    d = cfg.data
    params = {"n_samples": d.n_samples, "noise": d.noise, "train_fraction": d.train_fraction,
              "val_fraction": d.val_fraction}
    return cache.get(params, cfg.seed)[0] if cache else make_splits(**params, seed=cfg.seed)


def build_model(cfg: DictConfig) -> NeuralNetClassifier:
    return NeuralNetClassifier(
        hidden_nodes=hidden_sizes(cfg.model.hidden_nodes), activation=cfg.model.activation,
        learning_rate=cfg.train.learning_rate, reg_lambda=cfg.train.reg_lambda,
        epochs=cfg.train.epochs, batch_size=cfg.train.batch_size,
        random_state=derive_seed(cfg.seed, "model"))


def make_figures(model: NeuralNetClassifier, snapshots, history, splits: Splits, cfg: DictConfig,
                 out_dir: Path) -> dict[str, Path]:
    """Figure 3 and Figure 2 (animation and last frame) into ``out_dir``."""
    p = cfg.plot
    out_dir.mkdir(parents=True, exist_ok=True)
    size = {"width": p.width, "height": p.height, "dpi": p.dpi}
    figures = {"misclassification": plots.plot_misclassification(
        history, out_dir / "misclassification.png", **size)}
    figures["boundary"], figures["boundary_final"] = plots.render_boundary(
        snapshots, history, model.activation, splits.X_train, splits.y_train, model.classes_,
        out_dir / "boundary.gif", out_dir / "boundary_final.png", grid_size=p.grid_size,
        fps=p.fps, **size)
    return figures


@dataclass
class Outcome:
    """Everything a run produces, before it is tracked."""

    history: pd.DataFrame
    scores: dict[str, float]
    figures: dict[str, Path]
    weights: Path


def execute(cfg: DictConfig, splits: Splits, model: NeuralNetClassifier, out_dir: Path
            ) -> Outcome:
    """Train, evaluate and plot: the stages after the data, writing files under ``out_dir``.

    If training fails, ``model.history_`` still holds the curves up to the failure.
    """
    snapshots = training.train(model, splits,
                               training.frame_epochs(cfg.train.epochs, cfg.plot.frames))
    history = training.history_frame(model)
    return Outcome(history, training.evaluate(model, splits),
                   make_figures(model, snapshots, history, splits, cfg, out_dir / "figures"),
                   save_weights(model, out_dir / "weights.npz"))


def run_experiment(cfg: DictConfig, overrides: Sequence[str], out_dir: Path) -> RunResult:
    """Validate, then run and track one config; files go to ``out_dir``.

    Raises :class:`annlab.config.ConfigError` before anything is tracked, and re-raises a
    failure inside the run after recording it (FAILED, or KILLED on an interrupt).
    """
    validate(cfg)
    uri = tracking.resolve_uri(cfg.tracking.uri)
    experiment_id = tracking.prepare(uri, cfg.tracking.experiment)
    name, chash, parent = run_name(cfg), config_hash(cfg), cfg.tracking.parent_run_id
    if parent and (done := tracking.finished_child(uri, experiment_id, parent, chash)):
        return RunResult(done["run_id"], name, experiment_id, uri,
                         {k: done["metrics"].get(k, float("nan"))
                          for k in training.FINAL_METRICS}, skipped=True)
    splits = build_data(cfg, data_cache())
    model = build_model(cfg)
    git = provenance.git_state()
    env = provenance.environment(git)
    tags = {
        "annlab.config_hash": chash,
        "annlab.data_hash": splits.digest(),
        "annlab.git_dirty": git["dirty"],
        "annlab.lock_hash": env["lock_hash"],
        "annlab.platform": env["platform"]["fingerprint"],
    }
    if git["commit"]:
        tags["mlflow.source.git.commit"] = git["commit"]
    if cfg.tracking.sweep:
        tags["annlab.sweep"] = cfg.tracking.sweep
    out_dir.mkdir(parents=True, exist_ok=True)
    with tracking.tracked_run(uri, experiment_id, name, tags, parent) as run:
        run.log_params(flatten(cfg))
        run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
        run.log_text(OmegaConf.to_yaml(list(overrides)), "config/overrides.yaml")
        run.log_dict(env, "environment/environment.json")
        if git["diff"]:
            run.log_text(git["diff"], "environment/git.diff")
        splits.save(out_dir / "splits.npz")
        run.log_artifact(out_dir / "splits.npz", "data")
        try:
            outcome = execute(cfg, splits, model, out_dir)
        except BaseException:  # a diverged run keeps the curves up to its last finite epoch
            run.log_history(training.history_frame(model))
            raise
        run.log_history(outcome.history)
        run.log_metrics(outcome.scores)
        for path in outcome.figures.values():
            run.log_artifact(path, "figures")
        run.log_model(outcome.weights, splits.X_train[:5], model.predict(splits.X_train[:5]))
    return RunResult(run.run_id, name, experiment_id, uri, outcome.scores, outcome.figures)
