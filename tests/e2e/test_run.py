"""End to end: one config through every stage into a real MLflow store, and the CLI around it."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from annlab.model_io import features
from annlab.network import DivergenceError
from annlab.pipeline import run_experiment

REPO = Path(__file__).resolve().parents[2]


def _git(*args):
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


def _runs(uri, experiment):
    exp = MlflowClient(uri).get_experiment_by_name(experiment)
    return [] if exp is None else MlflowClient(uri).search_runs([exp.experiment_id])


@pytest.fixture(scope="module")
def recorded(resolved, store_uri, tmp_path_factory):
    """One default run (quick settings) tracked into the test store: (result, MLflow run)."""
    from tests.conftest import FAST

    experiment = f"test-run-{uuid.uuid4().hex[:8]}"
    spec = resolved([*FAST, f"tracking.uri={store_uri}", f"tracking.experiment={experiment}"])
    result = run_experiment(spec, ["train.epochs=60"], tmp_path_factory.mktemp("recorded"))
    return result, MlflowClient(store_uri).get_run(result.run_id)


def test_a_run_is_named_and_its_params_are_the_resolved_config(recorded):
    _, run = recorded
    assert run.info.status == "FINISHED" and run.info.run_name == "tanh-h10-lr0.5"
    p = run.data.params
    assert (p["model.activation"], p["model.hidden_nodes"], p["train.epochs"], p["seed"]) == \
        ("tanh", "10", "60", "0")


def test_each_curve_has_a_point_at_every_epoch(recorded, store_uri):
    _, run = recorded
    for key in ("train_misclassification", "val_misclassification", "train_loss", "val_loss"):
        steps = [m.step for m in MlflowClient(store_uri).get_metric_history(run.info.run_id,
                                                                            key)]
        assert sorted(steps) == list(range(1, 61))


def test_the_final_scores_are_logged_once(recorded):
    result, run = recorded
    for key in ("train_accuracy", "val_accuracy", "test_accuracy", "test_misclassification"):
        assert run.data.metrics[key] == pytest.approx(result.scores[key])
    assert run.data.metrics["test_accuracy"] + run.data.metrics["test_misclassification"] == 1


def test_the_tags_name_the_hashes_and_the_commit(recorded, store_uri):
    _, run = recorded
    tags = run.data.tags
    assert len(tags["annlab.data_hash"]) == 64 and len(tags["annlab.config_hash"]) == 16
    assert tags["mlflow.source.git.commit"] == _git("rev-parse", "HEAD").strip()
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no").strip())
    assert tags["annlab.git_dirty"] == str(dirty)
    env_files = {a.path for a in MlflowClient(store_uri).list_artifacts(run.info.run_id,
                                                                        "environment")}
    assert ("environment/git.diff" in env_files) == dirty
    environment = json.loads(tags["annlab.environment"])
    assert environment["git"]["commit"] == tags["mlflow.source.git.commit"]
    assert environment["packages"]["mlflow"] == "3.17.2"


def test_the_config_figures_and_data_are_artifacts(recorded, store_uri, tmp_path):
    _, run = recorded
    client = MlflowClient(store_uri)
    files = {a.path for d in ("config", "figures", "data")
             for a in client.list_artifacts(run.info.run_id, d)}
    assert files == {"config/config.yaml", "config/overrides.yaml",
                     "figures/misclassification.png", "figures/boundary.gif",
                     "figures/boundary_final.png"}  # the data: its dataset inputs
    local = Path(client.download_artifacts(run.info.run_id, "figures", str(tmp_path)))
    assert Image.open(local / "boundary.gif").n_frames == 5


def test_the_model_is_a_logged_model_linked_to_its_metrics_and_datasets(recorded, store_uri):
    _, run = recorded
    (output,) = run.outputs.model_outputs
    logged = MlflowClient(store_uri).get_logged_model(output.model_id)
    assert logged.name == "model" and logged.source_run_id == run.info.run_id
    assert logged.tags["annlab.run_name"] == run.info.run_name
    linked = {m.key: m for m in logged.metrics}
    assert set(linked) >= {"test_accuracy", "train_accuracy", "val_misclassification"}
    digests = {i.tags[0].value: i.dataset.digest for i in run.inputs.dataset_inputs}
    for key, split in [("test_accuracy", "test"), ("val_misclassification", "validation")]:
        assert (linked[key].dataset_name, linked[key].dataset_digest) == ("make_moons",
                                                                          digests[split])
    assert linked["val_misclassification"].step == 60  # the curve's last point, not a new one


def test_the_model_loads_without_unpickling_and_predicts(recorded, store_uri):
    _, run = recorded
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    X = np.array([[-1.0, 0.5], [2.0, -0.3]])
    assert list(model.predict(features(X))) == [0, 1]
    assert [c.name for c in model.metadata.signature.inputs.inputs] == ["x1", "x2"]
    logged = MlflowClient(store_uri).get_logged_model(run.outputs.model_outputs[0].model_id)
    stored = Path(logged.artifact_location.removeprefix("file://"))
    assert "annlab.model_io" in (stored / "MLmodel").read_text()
    assert sorted(p.name for p in stored.rglob("*") if p.is_file() and "pkl" in p.name) == []


def test_the_models_requirements_are_pinned(recorded, store_uri):
    _, run = recorded
    logged = MlflowClient(store_uri).get_logged_model(run.outputs.model_outputs[0].model_id)
    stored = Path(logged.artifact_location.removeprefix("file://"))
    requirements = (stored / "requirements.txt").read_text().split()
    assert all("==" in r for r in requirements)  # every one pinned, annlab's version too
    assert {r.split("==")[0] for r in requirements} >= {"annlab", "numpy", "scikit-learn"}


def test_a_diverging_run_is_failed_with_its_reason_and_curves(fast_spec, store_uri, tmp_path):
    spec = fast_spec("train.learning_rate=1e300")  # the L2 penalty overflows at once
    with pytest.raises(DivergenceError) as info:
        run_experiment(spec, [], tmp_path)
    (run,) = _runs(store_uri, spec.tracking.experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["annlab.failure"].startswith(f"diverged at epoch {info.value.epoch}")
    history = MlflowClient(store_uri).get_metric_history(run.info.run_id, "train_loss")
    assert info.value.epoch == 1 and history == []


def test_figure2_reproduces_the_posts_headline(resolved, store_uri, experiment, tmp_path):
    spec = resolved(["experiment=figure2", f"tracking.uri={store_uri}",
                     f"tracking.experiment={experiment}", "plot.frames=3", "plot.dpi=30",
                     "plot.grid_size=20"])
    result = run_experiment(spec, [], tmp_path)
    assert result.scores["train_accuracy"] >= 0.97


def _cli(*args, env_extra=None, **kw):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "pipelines.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, **kw)


def test_cli_prints_where_everything_is(store_uri, experiment, tmp_path, fast_overrides):
    out = _cli(*fast_overrides, f"tracking.experiment={experiment}", f"hydra.run.dir={tmp_path}",
               env_extra={"MLFLOW_TRACKING_URI": store_uri}, timeout=300)
    assert out.returncode == 0, out.stderr
    (run,) = _runs(store_uri, experiment)
    assert run.info.run_id in out.stdout and "test accuracy" in out.stdout
    assert str(tmp_path / "figures") in out.stdout and "make ui" in out.stdout
    overrides = (tmp_path / ".hydra" / "overrides.yaml").read_text()
    assert f"tracking.experiment={experiment}" in overrides


def test_cli_bad_value_is_one_line_without_traceback(store_uri, experiment, tmp_path):
    out = _cli("model.activation=softmax", f"tracking.experiment={experiment}",
               f"hydra.run.dir={tmp_path}", env_extra={"MLFLOW_TRACKING_URI": store_uri},
               timeout=300)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "error: invalid config: model.activation='softmax'; allowed: tanh | sigmoid | relu"]
    assert _runs(store_uri, experiment) == []


def test_sigterm_leaves_the_run_killed_with_its_curves_and_says_so_in_one_line(
        store_uri, experiment, tmp_path, sigterm_when):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.run", "train.epochs=200000", "plot.frames=3",
         f"tracking.experiment={experiment}", f"hydra.run.dir={tmp_path}"],
        cwd=REPO, env={**os.environ, "MLFLOW_TRACKING_URI": store_uri},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = sigterm_when(proc, lambda: _runs(store_uri, experiment), timeout=120,
                          pause=1.5)[1]
    (run,) = _runs(store_uri, experiment)
    assert run.info.status == "KILLED"
    assert "SIGTERM" in run.data.tags["annlab.failure"]
    assert proc.returncode == 130
    assert stderr.strip().splitlines() == [
        f"terminated (SIGTERM): run tanh-h10-lr0.5-e200000 ({run.info.run_id}) closed as KILLED"]
    epochs = len(MlflowClient(store_uri).get_metric_history(run.info.run_id, "val_loss"))
    assert epochs > 0 and "annlab.data_hash" in run.data.tags  # what it did is kept
    out = subprocess.run([sys.executable, "-m", "pipelines.reproduce", run.info.run_id,
                          "--uri", store_uri], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (f"identical: 4 curves x {epochs} epochs, data hash, 3 dataset digests, "
            "config hash") in out.stdout


def test_a_run_killed_with_sigkill_is_closed_the_next_time_the_store_is_opened(
        store_uri, experiment, tmp_path):
    cmd = [sys.executable, "-m", "pipelines.run", "plot.frames=3",
           f"tracking.experiment={experiment}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    proc = subprocess.Popen([*cmd, "train.epochs=200000", f"hydra.run.dir={tmp_path / 'a'}"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _runs(store_uri, experiment) and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        proc.kill()
        proc.wait()
    (killed,) = _runs(store_uri, experiment)
    assert killed.info.status == "RUNNING"  # nothing could close it
    out = _cli("train.epochs=5", f"tracking.experiment={experiment}",
               f"hydra.run.dir={tmp_path / 'b'}", "plot.frames=3",
               env_extra={"MLFLOW_TRACKING_URI": store_uri}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert killed.info.run_id in out.stderr and "left RUNNING" in out.stderr
    closed = MlflowClient(store_uri).get_run(killed.info.run_id)
    assert closed.info.status == "KILLED"
    assert f"pid {proc.pid}" in closed.data.tags["annlab.failure"]


def test_a_key_added_with_plus_is_refused_in_one_line(store_uri, experiment, tmp_path):
    out = _cli("+train.learning_rat=5", f"tracking.experiment={experiment}",
               f"hydra.run.dir={tmp_path}", env_extra={"MLFLOW_TRACKING_URI": store_uri},
               timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: invalid config: train.learning_rat=5; allowed: the keys of train: "
        "learning_rate, reg_lambda, epochs, batch_size (a misspelt key?)"]
    assert _runs(store_uri, experiment) == []
