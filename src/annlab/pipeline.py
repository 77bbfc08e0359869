"""One experiment through every stage: data -> train -> evaluate -> plot, tracked in MLflow."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from annlab import plots, provenance, tracking, training
from annlab.config import config_hash, flatten, hidden_sizes, run_name, validate
from annlab.data import Splits, derive_seed, make_splits
from annlab.model_io import save_weights
from annlab.network import NeuralNetClassifier


@dataclass
class RunResult:
    run_id: str
    run_name: str
    experiment_id: str
    uri: str
    scores: dict[str, float]
    figures: dict[str, Path] = field(default_factory=dict)
    skipped: bool = False  # a sweep job whose config already has a FINISHED child


def build_data(cfg: DictConfig) -> Splits:
    d = cfg.data
    return make_splits(d.n_samples, d.noise, d.train_fraction, d.val_fraction, cfg.seed)


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
    splits = build_data(cfg)
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
            snapshots = training.train(
                model, splits, training.frame_epochs(cfg.train.epochs, cfg.plot.frames))
        finally:  # a diverged run keeps the curves up to its last finite epoch
            history = training.history_frame(model)
            run.log_history(history)
        scores = training.evaluate(model, splits)
        run.log_metrics(scores)
        figures = make_figures(model, snapshots, history, splits, cfg, out_dir / "figures")
        for path in figures.values():
            run.log_artifact(path, "figures")
        weights = save_weights(model, out_dir / "weights.npz")
        run.log_model(weights, splits.X_train[:5], model.predict(splits.X_train[:5]))
    return RunResult(run.run_id, name, experiment_id, uri, scores, figures)
