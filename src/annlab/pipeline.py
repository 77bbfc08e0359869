"""One experiment through every stage: data -> train -> evaluate -> plot, tracked in MLflow.

:func:`rebuild` is the one recipe from a config to everything a run produces; tracking a run
(:func:`run_experiment`), reproducing one, `make docs` and the tests all call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from annlab import model_io, names, plots, provenance, tracking, training
from annlab.data import Splits, derive_seed, make_splits
from annlab.model_io import save_weights
from annlab.network import HISTORY_KEYS, NeuralNetClassifier
from annlab.spec import PlotSpec, RunSpec, parameters

SCORE_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # score -> its dataset


def build_data(spec: RunSpec) -> Splits:
    return make_splits(spec.data, seed=spec.seed)


def build_model(spec: RunSpec) -> NeuralNetClassifier:
    m, t = spec.model, spec.train
    return NeuralNetClassifier(
        hidden_nodes=m.hidden_nodes, activation=m.activation, learning_rate=t.learning_rate,
        reg_lambda=t.reg_lambda, epochs=t.epochs, batch_size=t.batch_size,
        random_state=derive_seed(spec.seed, "model"))


def boundary_plane(splits: Splits) -> plots.Plane:
    """Two features: their own plane, in raw units. More: the plane of the first two principal
    components of the training inputs (PCA fitted on the training split only)."""
    if splits.X_train.shape[1] == 2:
        return plots.Plane(splits.X_train, splits.inputs if splits.standardize else None)
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    inputs = splits.inputs(splits.X_train)
    # From the centred features' covariance: deterministic like a full SVD, without its
    # rows-by-features factor (a table of a million rows). Centred first: the solver forms
    # X'X - n mean mean', which loses a raw column's spread under a large mean (a year, a time).
    pca = make_pipeline(StandardScaler(with_std=False),
                        PCA(n_components=2, svd_solver="covariance_eigh")).fit(inputs)
    return plots.Plane(pca.transform(inputs), pca.inverse_transform,
                       ("principal component 1 (PCA fitted on train)", "principal component 2"),
                       "PCA plane   ")


def make_figures(model: NeuralNetClassifier, snapshots, history, splits: Splits, p: PlotSpec,
                 out_dir: Path) -> tuple[dict[str, Path], dict[int, Path]]:
    """Figure 3 and Figure 2 (animation and last frame; see :func:`boundary_plane`) into
    ``out_dir``, the test split's confusion matrix when there are more than two features, and
    ``image_steps`` of the animation's frames (epoch -> file) under ``out_dir/steps``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "steps").mkdir(exist_ok=True)
    files = {key: out_dir / name for key, name in names.FIGURE_FILES.items()}
    steps = {epoch: out_dir / "steps" / f"{names.BOUNDARY_IMAGE_KEY}-{epoch}.png"
             for epoch in training.spread((s.epoch for s in snapshots), p.image_steps)}
    size = p.size
    with plots.own_style():
        plots.plot_misclassification(history, files["misclassification"], **size)
        plots.render_boundary(snapshots, model.activation, boundary_plane(splits),
                              splits.y_train, model.classes_, files["boundary"],
                              files["boundary_final"], grid_size=p.grid_size, fps=p.fps,
                              step_paths=steps, **size)
        if splits.X_train.shape[1] == 2:
            del files["confusion"]
        else:
            from sklearn.metrics import confusion_matrix

            matrix = confusion_matrix(splits.y_test,
                                      model.predict(splits.inputs(splits.X_test)),
                                      labels=model.classes_)
            plots.plot_confusion(matrix, model.classes_, files["confusion"], "Confusion matrix, "
                                 f"test split ({len(splits.y_test)} samples)", **size)
    return files, steps


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
    step_images: dict[int, Path] = field(default_factory=dict)  # epoch -> boundary frame
    weights: Path | None = None
    failure: BaseException | None = None

    @property
    def stopped_at(self) -> int | None:
        """The last epoch trained when ``stop`` ended training early, else None."""
        epochs = len(self.history) if self.history is not None else 0
        return epochs if self.failure is None and epochs < self.model.epochs else None


def rebuild(spec: RunSpec, out_dir: Path, stop=None, watch=None,
            splits: Splits | None = None) -> Outcome:
    """Data (``splits``, if made already), model, training, scores, figures and weights of
    ``spec``, files under ``out_dir``; ``stop(model)`` may end training early and
    ``watch(model)`` sees each epoch trained (see :func:`annlab.training.train`).

    A failure after the data stage (divergence, an interrupt) is returned in
    ``Outcome.failure``, never swallowed: every caller re-raises it once it has what it needs.
    """
    outcome = Outcome(splits or build_data(spec), build_model(spec))
    model, splits = outcome.model, outcome.splits
    try:
        seen = splits.scaled()  # what the network takes: raw rows or standardised ones
        snapshots = training.train(model, seen,
                                   training.frame_epochs(spec.train.epochs, spec.plot.frames),
                                   stop, watch)
        outcome.history = training.history_frame(model)
        outcome.scores = training.evaluate(model, seen)
        outcome.figures, outcome.step_images = make_figures(
            model, snapshots, outcome.history, splits, spec.plot, out_dir / names.FIGURES_DIR)
        outcome.weights = save_weights(model, out_dir / "weights.npz", splits.scaler,
                                       spec.data.columns)
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
    stopped_at: int | None = None  # the last epoch, when stopped early (pruned)
    val_curve: list[float] | None = None  # per-epoch validation misclassification


class ParentClosed(tracking.TrackingError):
    """A job whose sweep or study stopped before it started."""


def run_experiment(spec: RunSpec, overrides: Sequence[str], out_dir: Path,
                   entry_point: str = "pipelines/run.py", stop=None, watch=None,
                   job: bool = False) -> RunResult:
    """Run and track one resolved config; files go to ``out_dir``; ``entry_point`` is what the
    run's Source names; ``stop`` may end training early (a study pruning a trial: the run still
    ends FINISHED, tagged with the last epoch it trained); ``watch`` sees each epoch (a
    terminal's progress); a sweep's ``job`` trusts the parent its launching process made. The
    curves reach the store while the run trains.

    Re-raises a failure inside the run after recording it (FAILED, or KILLED on an interrupt).
    """
    uri, parent = spec.tracking.uri, spec.tracking.parent_run_id
    if job and parent is not None:
        experiment = tracking.open_job(uri, spec.tracking.experiment, parent)
        if experiment is None:
            raise ParentClosed(f"{spec.name} not started: its sweep or study has stopped")
    else:
        experiment = tracking.open(uri, spec.tracking.experiment, job=job)
        if parent is not None:
            experiment.check_parent(parent)
    tags = {names.DATASET: spec.data.label}
    if spec.tune is not None and spec.tune.trial is not None:
        tags |= {names.STUDY: spec.tune.study, names.TRIAL: spec.tune.trial}
    out_dir.mkdir(parents=True, exist_ok=True)
    with experiment.start_run(spec.name, provenance.collect(spec.hash, entry_point),
                              parent_run_id=parent, sweep=spec.tracking.sweep, tags=tags) as run:
        run.log_text(OmegaConf.to_yaml(dict(spec.config)), names.CONFIG_FILE)
        run.log_text(OmegaConf.to_yaml(list(overrides)), names.OVERRIDES_FILE)
        splits = build_data(spec)
        curves = run.curves(list(HISTORY_KEYS), spec.params, {names.DATA_HASH: splits.digest()})
        _log_datasets(run, spec, splits)
        watching = curves.watch if watch is None else lambda m: (curves.watch(m), watch(m))
        outcome = rebuild(spec, out_dir, stop, watching, splits)
        _record(run, curves, experiment.id, spec, outcome)
        if outcome.failure is not None:
            raise outcome.failure
    return RunResult(run.run_id, spec.name, experiment.id, uri, outcome.scores, outcome.figures,
                     stopped_at=outcome.stopped_at,
                     val_curve=outcome.history["val_misclassification"].tolist())


def _log_datasets(run: tracking.Run, spec: RunSpec, splits: Splits) -> None:
    """Each split as a dataset input: a table of its features and labels, its source the file
    it was read from or how to make it again."""
    data, target = spec.data, spec.data.target or model_io.TARGET
    by_split = {f.split: f.path for f in data.files}
    run.log_datasets(data.input_name, {
        context: model_io.table(X, y, data.columns, target)
        for context, (X, y) in splits.by_context().items()}, splits.context_digests(),
        {context: by_split.get(context) or by_split.get(None) or {
            "function": f"sklearn.datasets.{data.function}",
            **parameters(spec.config)["data"], "seed": spec.seed}
         for context in splits.by_context()}, target)


def _record(run: tracking.Run, curves: tracking.Curves, experiment_id: str, spec: RunSpec,
            outcome: Outcome) -> None:
    """Everything the outcome holds (a failed one: its curves so far), in as few requests as
    MLflow allows: the figures and step images, the model, then one last batch with the
    curves not sent yet, the final metrics linked to the model, and the run's tags."""
    tags = {names.NOTE: describe(spec, run.run_id, outcome)}
    name = spec.name
    if outcome.stopped_at is not None:  # pruned: said in its name too, it ends FINISHED
        name = f"pruned@{outcome.stopped_at}-{spec.name}"  # first: names get cut
        tags |= {names.PRUNED_AT: outcome.stopped_at, names.RUN_NAME: name}
    if outcome.failure is not None:
        curves.flush(tags)
        return
    for path in outcome.figures.values():
        run.log_artifact(path, names.FIGURES_DIR)
    tags |= run.log_images(names.BOUNDARY_IMAGE_KEY, outcome.step_images)
    splits, data = outcome.splits, spec.data
    sample = splits.X_train[:tracking.SCHEMA_ROWS]  # all the signature reads
    model_id = run.create_model(experiment_id, outcome.weights,
                                model_io.features(sample, data.columns),
                                outcome.model.predict(splits.inputs(sample)), spec.params, name)
    val = outcome.history["val_misclassification"]
    linked = [tracking.ModelMetric(k, v, SCORE_SPLITS[k.split("_")[0]])
              for k, v in outcome.scores.items()]
    linked.append(tracking.ModelMetric("val_misclassification", val.iloc[-1], "validation",
                                       int(val.index[-1])))
    curves.flush(tags, model_id, linked, data.input_name, splits.context_digests())
    run.publish_model(model_id)


def describe(spec: RunSpec, run_id: str, outcome: Outcome) -> str:
    """The run's description (markdown): what it is, its settings, how it ended, and the
    command that reproduces it."""
    d, t, shape = spec.data, spec.train, spec.data.shape
    layers = "-".join(map(str, (shape.n_features, *spec.model.hidden_nodes, shape.n_classes)))
    n_train, n_val, n_test = (len(y) for _, y in outcome.splits.by_context().values())
    batch = "full-batch" if t.batch_size is None else f"mini-batch ({t.batch_size})"
    settings = ", ".join(f"{key} {value:g}" for key, value in d.settings.items()
                         if key != "n_samples" and not isinstance(value, bool))
    source = (f"scikit-learn's {d.function}" if not d.files else
              " and ".join(f"`{f.path}`" for f in d.files) + f" (target column `{d.target}`)")
    lines = [
        f"A {layers} network ({spec.model.activation} hidden layers, softmax output) trained "
        f"by {batch} gradient descent on {source}"
        f"{', standardised on the training split' if d.standardize else ''}.", "",
        "| setting | value |", "| --- | --- |",
        f"| learning rate | {t.learning_rate:g} |", f"| L2 (reg_lambda) | {t.reg_lambda:g} |",
        f"| epochs | {t.epochs} |",
        f"| data | {shape.n_samples} samples{', ' + settings if settings else ''}: "
        f"{n_train}/{n_val}/{n_test} train/validation/test |", f"| seed | {spec.seed} |", ""]
    if spec.tracking.sweep:
        lines += [f"One configuration of the sweep `{spec.tracking.sweep}`.", ""]
    if spec.tune is not None and spec.tune.trial is not None:
        lines += [f"Trial {spec.tune.trial} of the tuning study `{spec.tune.study}`.", ""]
    if outcome.stopped_at is not None:
        lines += [f"Pruned by the study after {outcome.stopped_at} epochs (its validation "
                  "curve trailed the other trials'); scores and figures are those of that "
                  "epoch.", ""]
    if outcome.failure is None:
        s = outcome.scores
        lines.append(f"Test accuracy **{s['test_accuracy']:.3f}** (training "
                     f"{s['train_accuracy']:.3f}, validation {s['val_accuracy']:.3f}).")
    else:
        reason = outcome.failure or "interrupted"
        lines.append(f"Stopped after {len(outcome.history)} epochs: {reason}.")
    lines += ["", f"Reproduce and compare everything: `make reproduce RUN_ID={run_id}`"]
    return "\n".join(lines)
