"""The one recipe from a spec to everything a run produces (annlab.pipeline.rebuild), the
model it builds, the plane Figure 2 is drawn in, and the run's description."""

import io

import numpy as np
import pytest
from PIL import Image

from annlab import pipeline
from annlab.data import derive_seed
from annlab.network import DivergenceError

QUICK = ["train.epochs=40", "plot.frames=5", "plot.image_steps=3", "plot.grid_size=20",
         "plot.dpi=30", "data.n_samples=200"]


def test_the_model_is_built_from_the_spec_with_the_models_own_seed(resolved):
    spec = resolved(["model.hidden_nodes=[4,3]", "model.activation=relu", "train.batch_size=16"])
    model = pipeline.build_model(spec)
    assert (model.hidden_nodes, model.activation, model.batch_size) == ((4, 3), "relu", 16)
    assert (model.learning_rate, model.reg_lambda, model.epochs) == (0.5, 0.01, 1000)
    assert model.random_state == derive_seed(0, "model") != derive_seed(0, "data")


def test_rebuild_makes_the_curves_scores_figures_steps_and_weights(resolved, tmp_path):
    outcome = pipeline.rebuild(resolved(QUICK), tmp_path)
    assert outcome.failure is None and outcome.stopped_at is None
    assert list(outcome.history.index) == list(range(1, 41))
    assert set(outcome.scores) == {"train_accuracy", "val_accuracy", "test_accuracy",
                                   "test_misclassification"}
    assert set(outcome.figures) == {"misclassification", "boundary", "boundary_final"}
    assert all(path.is_file() for path in outcome.figures.values())
    assert sorted(outcome.step_images) == [0, 20, 40]  # the untrained network first
    with np.load(outcome.weights, allow_pickle=False) as f:
        assert {"coef_0", "coef_1", "scaler_mean"} <= set(f.files)  # moons is standardised


def test_more_than_two_features_draw_the_pca_plane_and_a_confusion_matrix(resolved, tmp_path):
    spec = resolved(["data=iris", *QUICK[:-1]])
    outcome = pipeline.rebuild(spec, tmp_path)
    assert "confusion" in outcome.figures
    plane = pipeline.boundary_plane(outcome.splits)
    assert plane.title.startswith("PCA plane") and plane.points.shape == (
        len(outcome.splits.y_train), 2)
    # The plane's points map back to 4 input features.
    assert plane.to_inputs(plane.points[:3]).shape == (3, 4)
    # It is the plane of the first two principal components, as a full SVD finds them.
    from sklearn.decomposition import PCA

    inputs = outcome.splits.inputs(outcome.splits.X_train)
    full = PCA(n_components=2, svd_solver="full").fit(inputs)
    np.testing.assert_allclose(plane.points, full.transform(inputs), atol=1e-9)
    with Image.open(outcome.figures["confusion"]) as image:
        assert image.size == (round(6.4 * 30), round(4.8 * 30))


@pytest.mark.parametrize("offset", [0.0, 2000.0, 1.7e9], ids=["centred", "a year", "a time"])
def test_the_pca_plane_of_raw_columns_is_a_full_svds_whatever_their_means(offset):
    from sklearn.decomposition import PCA

    from annlab.data import Splits

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 4)) * [1.0, 2.0, 0.5, 3.0]
    X[:, 0] += offset  # a raw column of large mean and unit spread
    y = (X[:, 1] > 0).astype(int)
    plane = pipeline.boundary_plane(Splits(X, y, X[:10], y[:10], X[:10], y[:10]))
    full = PCA(n_components=2, svd_solver="full").fit(X)
    np.testing.assert_allclose(plane.points, full.transform(X), atol=1e-6)
    np.testing.assert_allclose(plane.to_inputs(plane.points), full.inverse_transform(
        full.transform(X)), rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("data", [["data=moons", *QUICK], ["data=iris", *QUICK[:-1]]],
                         ids=["moons", "iris"])
def test_a_runs_figures_do_not_depend_on_the_style_the_process_has_set(resolved, tmp_path,
                                                                        data):
    """A notebook's style, or the ggplot style Optuna's plots leave set, changes nothing."""
    import matplotlib

    spec = resolved(data)
    before = pipeline.rebuild(spec, tmp_path / "a").figures
    with matplotlib.style.context("ggplot"), matplotlib.rc_context({"lines.linewidth": 4}):
        after = pipeline.rebuild(spec, tmp_path / "b").figures
    assert before.keys() == after.keys()
    for key in before:
        assert before[key].read_bytes() == after[key].read_bytes(), key


def test_two_features_keep_their_own_plane_in_raw_units(resolved, tmp_path):
    outcome = pipeline.rebuild(resolved(QUICK), tmp_path)
    plane = pipeline.boundary_plane(outcome.splits)
    np.testing.assert_array_equal(plane.points, outcome.splits.X_train)
    np.testing.assert_allclose(plane.to_inputs(plane.points),
                               outcome.splits.scaled().X_train)  # the scaler, applied


def test_a_failure_is_returned_with_the_curves_so_far_not_raised(resolved, tmp_path):
    outcome = pipeline.rebuild(resolved([*QUICK, "train.learning_rate=1e300"]), tmp_path)
    assert isinstance(outcome.failure, DivergenceError)
    assert len(outcome.history) == outcome.failure.epoch - 1 and outcome.figures == {}


def test_a_stop_ends_training_early_and_says_where(resolved, tmp_path):
    outcome = pipeline.rebuild(resolved(QUICK), tmp_path, stop=lambda m: m.n_iter_ >= 15)
    assert outcome.stopped_at == 15 and len(outcome.history) == 15


@pytest.mark.parametrize("overrides, expected", [
    ([], ["A 2-10-2 network (tanh hidden layers, softmax output) trained by full-batch "
          "gradient descent on scikit-learn's make_moons, standardised on the training split.",
          "| data | 200 samples, noise 0.2: 120/40/40 train/validation/test |"]),
    (["train.batch_size=16", "model.hidden_nodes=[4,3]"],
     ["A 2-4-3-2 network", "mini-batch (16) gradient descent"]),
])
def test_the_description_says_what_the_run_is_and_how_to_reproduce_it(resolved, tmp_path,
                                                                        overrides, expected):
    spec = resolved([*QUICK, *overrides])
    outcome = pipeline.rebuild(spec, tmp_path)
    text = pipeline.describe(spec, "abc123", outcome)
    for line in expected:
        assert line in text
    assert text.endswith("`make reproduce RUN_ID=abc123`")
    assert f"Test accuracy **{outcome.scores['test_accuracy']:.3f}**" in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_a_run_shows_its_epochs_on_a_terminal_and_nothing_elsewhere(resolved, tmp_path,
                                                                    monkeypatch, terminal):
    from pipelines.run import progress_bar

    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with progress_bar(40, mininterval=0) as watch:  # every epoch drawn
        assert (watch is None) is not terminal
        outcome = pipeline.rebuild(resolved(QUICK), tmp_path, watch=watch)
    shown = err.getvalue()
    if not terminal:
        assert shown == ""
        return
    frames = [f for f in shown.split("\r") if f.strip()]  # leave=False then clears the line
    last, history = frames[-1], outcome.history
    assert "40/40" in last and "epoch" in last
    assert (f"train loss {history['train_loss'].iloc[-1]:.4f}, val misclassification "
            f"{history['val_misclassification'].iloc[-1]:.3f}") in last


@pytest.mark.parametrize("parent", ["0123456789abcdef0123456789abcdef", "elsewhere"])
def test_a_parent_given_by_hand_must_be_a_run_of_the_experiment(fast_spec, store_uri,
                                                                 experiment, tmp_path, parent):
    from mlflow.tracking import MlflowClient

    from annlab import tracking
    from annlab.config import ConfigError

    if parent == "elsewhere":  # a real run, of another experiment
        with tracking.open(store_uri, f"{experiment}-other").start_run("p") as other:
            parent = other.run_id
    exp = tracking.open(store_uri, experiment)
    with pytest.raises(ConfigError, match=f"tracking.parent_run_id='{parent}'; allowed: the "
                                          f"id of a run in experiment '{experiment}'"):
        pipeline.run_experiment(fast_spec(f"tracking.parent_run_id={parent}"), [], tmp_path)
    assert MlflowClient(store_uri).search_runs([exp.id]) == []  # no run was made


@pytest.mark.parametrize("status", ["KILLED", "FINISHED", "FAILED"])
def test_a_job_whose_sweep_has_stopped_does_not_start(fast_spec, store_uri, experiment,
                                                      tmp_path, status):
    from mlflow.tracking import MlflowClient

    from annlab import job, tracking

    exp = tracking.open(store_uri, experiment)
    client = MlflowClient(store_uri)
    parent = client.create_run(exp.id, run_name="sweep").info.run_id
    client.set_terminated(parent, status)  # Ctrl-C closed it while this job was queued
    spec = fast_spec(f"tracking.parent_run_id={parent}")
    with pytest.raises(pipeline.ParentClosed, match=f"{spec.name} not started"):
        pipeline.run_experiment(spec, [], tmp_path, job=True)
    assert job.run(spec, [], tmp_path) == {"status": "KILLED"}
    assert [r.info.run_id for r in client.search_runs([exp.id])] == [parent]
