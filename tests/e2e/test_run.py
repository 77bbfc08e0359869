"""End to end: one config through every stage into a real MLflow store, and the CLI around it."""

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from annlab.config import ConfigError
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


def test_a_run_records_everything_design_names(fast_cfg, store_uri, experiment, tmp_path):
    result = run_experiment(fast_cfg(), ["train.epochs=60"], tmp_path)
    client = MlflowClient(store_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tanh-h10-lr0.5"
    p = run.data.params
    assert (p["model.activation"], p["model.hidden_nodes"], p["train.epochs"], p["seed"]) == \
        ("tanh", "10", "60", "0")
    for key in ("train_misclassification", "val_misclassification", "train_loss", "val_loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(1, 61))
    for key in ("train_accuracy", "val_accuracy", "test_accuracy", "test_misclassification"):
        assert run.data.metrics[key] == pytest.approx(result.scores[key])
    assert run.data.metrics["test_accuracy"] + run.data.metrics["test_misclassification"] == 1
    tags = run.data.tags
    assert len(tags["annlab.data_hash"]) == 64 and len(tags["annlab.config_hash"]) == 16
    head = _git("rev-parse", "HEAD").strip()
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no").strip())
    assert tags["mlflow.source.git.commit"] == head
    assert tags["annlab.git_dirty"] == str(dirty)
    env_files = {a.path for a in client.list_artifacts(run.info.run_id, "environment")}
    assert ("environment/git.diff" in env_files) == dirty
    assert "environment/environment.json" in env_files
    files = {a.path for d in ("config", "figures", "data")
             for a in client.list_artifacts(run.info.run_id, d)}
    assert {"config/config.yaml", "config/overrides.yaml", "figures/misclassification.png",
            "figures/boundary.gif", "figures/boundary_final.png", "data/splits.npz"} <= files
    local = Path(client.download_artifacts(run.info.run_id, "figures", str(tmp_path / "dl")))
    assert Image.open(local / "boundary.gif").n_frames == 5
    # The model: an MLflow 3 logged model named "model", loaded without unpickling anything.
    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.name == "model" and logged.source_run_id == run.info.run_id
    linked = {m.key: m for m in logged.metrics}
    assert set(linked) >= {"test_accuracy", "train_accuracy", "val_misclassification"}
    digests = {i.tags[0].value: i.dataset.digest for i in run.inputs.dataset_inputs}
    for key, split in [("test_accuracy", "test"), ("val_misclassification", "validation")]:
        assert (linked[key].dataset_name, linked[key].dataset_digest) == ("make_moons",
                                                                          digests[split])
    assert linked["val_misclassification"].step == 60  # the curve's last point, not a new one
    assert logged.tags["annlab.run_name"] == run.info.run_name
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    X = np.array([[-1.0, 0.5], [2.0, -0.3]])
    assert list(model.predict(features(X))) == [0, 1]
    assert model.metadata.signature is not None
    stored = Path(logged.artifact_location.removeprefix("file://"))
    assert "annlab.model_io" in (stored / "MLmodel").read_text()
    requirements = (stored / "requirements.txt").read_text().split()
    assert all("==" in r for r in requirements)  # every one pinned, annlab's version too
    assert {r.split("==")[0] for r in requirements} >= {"annlab", "numpy", "scikit-learn"}
    assert [c.name for c in model.metadata.signature.inputs.inputs] == ["x1", "x2"]
    assert sorted(p.name for p in stored.rglob("*") if p.is_file() and "pkl" in p.name) == []


def test_a_bad_config_creates_no_run(fast_cfg, store_uri, experiment, tmp_path):
    with pytest.raises(ConfigError, match="train.learning_rate"):
        run_experiment(fast_cfg("train.learning_rate=-1"), [], tmp_path)
    assert _runs(store_uri, experiment) == []


def test_a_diverging_run_is_failed_with_its_reason_and_curves(fast_cfg, store_uri, tmp_path):
    cfg = fast_cfg("train.learning_rate=1e300")  # the L2 penalty overflows at once
    with pytest.raises(DivergenceError) as info:
        run_experiment(cfg, [], tmp_path)
    (run,) = _runs(store_uri, cfg.tracking.experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["annlab.failure"].startswith(f"diverged at epoch {info.value.epoch}")
    history = MlflowClient(store_uri).get_metric_history(run.info.run_id, "train_loss")
    assert info.value.epoch == 1 and history == []


def test_figure2_reproduces_the_posts_headline(compose_cfg, store_uri, experiment, tmp_path):
    cfg = compose_cfg(["experiment=figure2", f"tracking.uri={store_uri}",
                       f"tracking.experiment={experiment}", "plot.frames=3", "plot.dpi=30",
                       "plot.grid_size=20"])
    result = run_experiment(cfg, [], tmp_path)
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
        [sys.executable, "-m", "pipelines.run", "train.epochs=200000", "plot.frames=2",
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
    cmd = [sys.executable, "-m", "pipelines.run", "plot.frames=2",
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
               f"hydra.run.dir={tmp_path / 'b'}", "plot.frames=2",
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
