"""`make ui` and what the MLflow UI shows of annlab's runs, read through the UI server's own REST
API as the browser would: the link into the training runs, source and user, description,
datasets, the logged model, per-epoch boundary images, and a sweep's parent."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from annlab import tracking
from annlab.pipeline import run_experiment

REPO = Path(__file__).resolve().parents[2]
TINY = ["train.epochs=30", "plot.frames=6", "plot.image_steps=3", "plot.grid_size=12",
        "plot.dpi=30", "data.n_samples=120"]


@pytest.fixture(scope="module")
def ui(tmp_path_factory, resolved):
    """A store with one run and a 4-config sweep, and `make ui` serving it."""
    root = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    run = run_experiment(resolved([*TINY, f"tracking.uri={uri}"]), [], root / "run")
    sweep = subprocess.run(
        [sys.executable, "-m", "pipelines.run", "sweep=default", *TINY, "hydra/launcher=basic",
         "model.activation=tanh,relu", "model.hidden_nodes=2,10", "train.learning_rate=0.5",
         f"tracking.uri={uri}", f"hydra.sweep.dir={root / 'sweep'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.ui", "--port", str(port)],
                            cwd=REPO, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        link = proc.stdout.readline().strip()  # printed once the UI answers
        assert link.startswith("MLflow UI: "), proc.stderr.read() if proc.poll() else link
        yield {"link": link.removeprefix("MLflow UI: "), "base": f"http://127.0.0.1:{port}",
               "run": run, "uri": uri}
    finally:
        proc.send_signal(signal.SIGTERM)  # make ui stops the UI it started
        proc.wait(timeout=60)
        deadline = time.monotonic() + 20
        while _listening(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _listening(port), "make ui left the MLflow UI running"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _api(ui, endpoint, **params):
    response = requests.get(f"{ui['base']}/api/2.0/mlflow/{endpoint}", params=params,
                            timeout=30)
    response.raise_for_status()
    return response.json()


def test_make_ui_prints_the_link_into_the_experiments_training_runs(ui):
    experiment_id = tracking.open(ui["uri"], "annlab").id
    assert ui["link"] == (f"{ui['base']}/#/experiments/{experiment_id}/runs"
                          "?workflowType=machine_learning&viewStateShareKey=annlab-runs")
    assert "<html" in requests.get(ui["base"], timeout=30).text.lower()


def _view(ui, key):
    experiment_id = tracking.open(ui["uri"], "annlab").id
    tags = {t["key"]: t["value"] for t in _api(ui, "experiments/get", experiment_id=
                                                experiment_id)["experiment"]["tags"]}
    view = json.loads(tags[f"mlflow.sharedViewState.{key}"])
    state = json.loads(view["state"])
    runs = requests.post(f"{ui['base']}/api/2.0/mlflow/runs/search", timeout=30, json={
        "experiment_ids": [experiment_id], "filter": state["searchFilter"],
        "order_by": [state["orderByKey"].replace("`", "") + " ASC"]}).json()["runs"]
    return view["name"], state, runs


def test_the_linked_view_shows_single_runs_and_sweeps_best_first_with_their_dataset(ui):
    name, state, runs = _view(ui, "annlab-runs")
    assert name == "annlab: runs and sweeps"
    assert "tags.`annlab.dataset`" in state["selectedColumns"]
    assert "tags.`annlab.best_run_name`" in state["selectedColumns"]
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    assert sorted(r["info"]["run_id"] for r in runs) == sorted(
        [ui["run"].run_id, next(r["info"]["run_id"] for r, t in zip(runs, tags)
                                if "annlab.sweep" in t)])  # the run and the sweep's parent
    assert {t["annlab.dataset"] for t in tags} == {"moons"}
    scores = [{m["key"]: m["value"] for m in r["data"]["metrics"]}["val_misclassification"]
              for r in runs]
    assert scores == sorted(scores)  # the sweep ranks by its best child's


def test_the_best_first_view_lists_every_trained_run_flat(ui):
    name, _, runs = _view(ui, "annlab-best")
    assert name == "annlab: best first" and len(runs) == 5  # the run and the sweep's four


def test_the_chart_views_boundary_card_shows_images_not_parameters(ui):
    _, state, _ = _view(ui, "annlab-runs")
    (card,) = [c for c in state["compareRunCharts"] if c["type"] == "IMAGE"]
    assert {c["metricKey"] for c in state["compareRunCharts"] if c["type"] == "LINE"} == {
        "val_misclassification", "train_misclassification", "val_loss", "train_loss"}
    assert card["imageKeys"] == ["boundary"] and card["showRunParams"] is False
    assert card["step"] == 0  # every run has an image there: the untrained network's


def test_runs_compare_in_mlflows_own_view_on_the_objective(ui):
    # MLflow's Compare page's parallel coordinates plot starts on the first metric a run
    # logged.
    metrics = _api(ui, "runs/get", run_id=ui["run"].run_id)["run"]["data"]["metrics"]
    assert metrics[0]["key"] == "val_misclassification"


def test_a_run_shows_source_description_datasets_model_and_boundary_images(ui):
    run_id = ui["run"].run_id
    run = _api(ui, "runs/get", run_id=run_id)["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["mlflow.source.name"] == "pipelines/run.py"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert f"`make reproduce RUN_ID={run_id}`" in tags["mlflow.note.content"]
    params = {p["key"] for p in run["data"]["params"]}
    assert "model.activation" in params and not any(p.startswith("tracking.") for p in params)

    inputs = run["inputs"]["dataset_inputs"]
    contexts = {i["tags"][0]["value"]: i["dataset"] for i in inputs}
    assert set(contexts) == {"train", "validation", "test"}
    assert {d["name"] for d in contexts.values()} == {"make_moons"}
    assert len({d["digest"] for d in contexts.values()}) == 3

    (output,) = run["outputs"]["model_outputs"]
    model = _api(ui, f"logged-models/{output['model_id']}")["model"]
    assert model["info"]["status"] == "LOGGED_MODEL_READY"
    assert model["info"]["source_run_id"] == run_id and model["info"]["name"] == "model"
    linked = {m["key"] for m in model["data"]["metrics"]}
    assert {"test_accuracy", "val_accuracy"} <= linked

    files = [f["path"] for f in _api(ui, "artifacts/list", run_id=run_id,
                                     path="images")["files"]]
    steps = sorted({int(Path(f).name.split("+")[2]) for f in files if f.endswith(".png")})
    # 3 of the 6 frames' epochs (0, 6, 12, 18, 24, 30), spread, the first and the last
    assert steps == [0, 12, 30]  # from the untrained network


def test_a_sweep_parent_shows_its_grid_best_run_and_description(ui):
    experiment_id = tracking.open(ui["uri"], "annlab").id
    runs = requests.post(f"{ui['base']}/api/2.0/mlflow/runs/search", timeout=30, json={
        "experiment_ids": [experiment_id],
        "filter": "tags.`annlab.sweep` = 'grid'"}).json()["runs"]
    (parent,) = [r for r in runs if not any(t["key"] == "mlflow.parentRunId"
                                            for t in r["data"]["tags"])]
    params = {p["key"]: p["value"] for p in parent["data"]["params"]}
    assert params == {"model.activation": "tanh,relu", "model.hidden_nodes": "2,10"}
    tags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
    kids = {r["info"]["run_id"]: r["info"]["run_name"] for r in runs
            if r["info"]["run_id"] != parent["info"]["run_id"]}
    assert tags["annlab.best_run_name"] == kids[tags["annlab.best_run"]]
    note = tags["mlflow.note.content"]
    assert "| `model.hidden_nodes` | 2, 10 |" in note
    assert f"Best: **[{tags['annlab.best_run_name']}](#/experiments/{experiment_id}/runs/" \
        f"{tags['annlab.best_run']})**" in note
