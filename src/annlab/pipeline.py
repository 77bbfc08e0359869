"""One experiment through every stage: data -> train -> evaluate -> plot, tracked in MLflow.

:func:`rebuild` is the one recipe from a config to everything a run produces; tracking a run
(:func:`run_experiment`), reproducing one, `make docs` and the tests all call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from annlab import names, plots, provenance, tracking, training
from annlab.config import config_hash, flatten, run_name, validate
from annlab.data import Splits, derive_seed, make_splits
from annlab.model_io import save_weights
from annlab.network import NeuralNetClassifier
from annlab.rules import hidden_sizes


def build_data(cfg: DictConfig) -> Splits:
    d = cfg.data
    return make_splits(d.n_samples, d.noise, d.train_fraction, d.val_fraction, seed=cfg.seed)


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
    files = {key: out_dir / name for key, name in names.FIGURE_FILES.items()}
    size = {"width": p.width, "height": p.height, "dpi": p.dpi}
    plots.plot_misclassification(history, files["misclassification"], **size)
    plots.render_boundary(snapshots, history, model.activation, splits.X_train, splits.y_train,
                          model.classes_, files["boundary"], files["boundary_final"],
                          grid_size=p.grid_size, fps=p.fps, **size)
    return files


@dataclass
class Outcome:
    """Everything a config produces, before it is tracked.

    When training (or a later stage) fails, ``failure`` holds the exception and ``history`` the
    curves up to it; the caller records what there is and re-raises.
    """

    splits: Splits
    model: NeuralNetClassifier
    history: pd.DataFrame | None = None
    scores: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    weights: Path | None = None
    failure: BaseException | None = None


def rebuild(cfg: DictConfig, out_dir: Path) -> Outcome:
    """Data, model, training, scores, figures and weights of ``cfg``, files under ``out_dir``.

    A failure after the data stage (divergence, an interrupt) is returned in
    ``Outcome.failure``, never swallowed: every caller re-raises it once it has what it needs.
    """
    outcome = Outcome(build_data(cfg), build_model(cfg))
    model, splits = outcome.model, outcome.splits
    try:
        snapshots = training.train(model, splits,
                                   training.frame_epochs(cfg.train.epochs, cfg.plot.frames))
        outcome.history = training.history_frame(model)
        outcome.scores = training.evaluate(model, splits)
        outcome.figures = make_figures(model, snapshots, outcome.history, splits, cfg,
                                       out_dir / names.FIGURES_DIR)
        outcome.weights = save_weights(model, out_dir / "weights.npz")
    except BaseException as err:
        outcome.history = training.history_frame(model)
        outcome.failure = err
    return outcome


@dataclass
class RunResult:
    run_id: str
    run_name: str
    experiment_id: str
    uri: str
    scores: dict[str, float]
    figures: dict[str, Path] = field(default_factory=dict)
    skipped: bool = False  # a sweep job whose config already has a FINISHED child


def run_experiment(cfg: DictConfig, overrides: Sequence[str], out_dir: Path) -> RunResult:
    """Validate, then run and track one config; files go to ``out_dir``.

    Raises :class:`annlab.config.ConfigError` before anything is tracked, and re-raises a
    failure inside the run after recording it (FAILED, or KILLED on an interrupt).
    """
    validate(cfg)
    uri = tracking.resolve_uri(cfg.tracking.uri, cfg.paths.store)
    experiment = tracking.open(uri, cfg.tracking.experiment)
    name, chash, parent = run_name(cfg), config_hash(cfg), cfg.tracking.parent_run_id
    if parent and (done := experiment.finished_child(parent, chash)):
        return RunResult(done.run_id, name, experiment.id, uri,
                         {k: done.metrics.get(k, float("nan")) for k in training.FINAL_METRICS},
                         skipped=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with experiment.start_run(name, provenance.collect(chash), parent_run_id=parent,
                              sweep=cfg.tracking.sweep) as run:
        run.log_params(flatten(cfg))
        run.log_text(OmegaConf.to_yaml(cfg, resolve=True), names.CONFIG_FILE)
        run.log_text(OmegaConf.to_yaml(list(overrides)), names.OVERRIDES_FILE)
        outcome = rebuild(cfg, out_dir)
        _record(run, outcome, out_dir)
        if outcome.failure is not None:
            raise outcome.failure
    return RunResult(run.run_id, name, experiment.id, uri, outcome.scores, outcome.figures)


def _record(run: tracking.Run, outcome: Outcome, out_dir: Path) -> None:
    """Everything the outcome holds (a failed one: its data and curves so far)."""
    splits = outcome.splits
    run.set_tags({names.DATA_HASH: splits.digest()})
    splits.save(out_dir / names.SPLITS_FILE)
    run.log_artifact(out_dir / names.SPLITS_FILE, names.DATA_DIR)
    run.log_history(outcome.history)
    if outcome.failure is not None:
        return
    run.log_metrics(outcome.scores)
    for path in outcome.figures.values():
        run.log_artifact(path, names.FIGURES_DIR)
    X = splits.X_train[:5]
    run.log_model(outcome.weights, X, outcome.model.predict(X))
