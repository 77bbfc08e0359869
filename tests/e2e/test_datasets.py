"""Every dataset of conf/data/ through every stage into a real store, reproduced; and a grid over
datasets through `make sweep`'s entry point."""

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from annlab import reproducibility
from annlab.pipeline import run_experiment
from annlab.rules import DATASETS

REPO = Path(__file__).resolve().parents[2]
QUICK = ["train.epochs=30", "plot.frames=4", "plot.image_steps=2", "plot.grid_size=30",
         "plot.dpi=40"]


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_runs_is_tracked_as_itself_and_reproduces(
        resolved, store_uri, experiment, tmp_path, name):
    spec = resolved([f"data={name}", *QUICK, f"tracking.uri={store_uri}",
                     f"tracking.experiment={experiment}"])
    result = run_experiment(spec, [f"data={name}"], tmp_path)
    client = MlflowClient(store_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == ("" if name == "moons" else f"{name}-") + "tanh-h10-lr0.5"
    params = run.data.params
    assert params["data.name"] == name and params["data.standardize"] == "True"
    # Only the settings its dataset takes are parameters.
    assert {k for k in params if k.startswith("data.") and "fraction" not in k} == {
        "data.name", "data.standardize", *(f"data.{k}" for k in DATASETS[name].settings)}
    inputs = run.inputs.dataset_inputs
    assert {d.dataset.name for d in inputs} == {DATASETS[name].function}
    assert len(inputs) == 3
    n_features = spec.data.shape.n_features
    figures = {a.path for a in client.list_artifacts(result.run_id, "figures")}
    # More than two features: the confusion matrix too, and the boundary in the PCA plane.
    assert ("figures/confusion_matrix.png" in figures) == (n_features > 2)
    with Image.open(result.figures["boundary_final"]) as image:
        assert image.size == (256, 192)
    model = client.get_logged_model(run.outputs.model_outputs[0].model_id)
    assert model.status.to_proto() == 2  # READY
    report = reproducibility.reproduce(store_uri, result.run_id)
    assert report.differences == [], report.differences
    assert any("figures" in checked for checked in report.checked)


def test_a_grid_over_datasets_keeps_each_dataset_apart(store_uri, experiment, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.run", "sweep=default", "data=moons,iris",
         "model.activation=tanh", "model.hidden_nodes=3,5", "train.learning_rate=0.5", *QUICK,
         f"tracking.uri={store_uri}", f"tracking.experiment={experiment}",
         f"hydra.sweep.dir={tmp_path}", "hydra/launcher=basic"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    client = MlflowClient(store_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.info.run_name for r in children) == [
        "iris-tanh-h3-lr0.5-e30", "iris-tanh-h5-lr0.5-e30", "tanh-h3-lr0.5-e30",
        "tanh-h5-lr0.5-e30"]
    (parent,) = [r for r in runs if "annlab.sweep" in r.data.tags
                 and "mlflow.parentRunId" not in r.data.tags]
    # Each dataset: its rows, its figures, its best run, its registered model.
    summary = (tmp_path / "summary" / "sweep_summary.csv").read_text().splitlines()
    assert summary[0].startswith("dataset,") and sorted(r.split(",")[0] for r in summary[1:]) \
        == ["iris", "iris", "moons", "moons"]
    figures = {a.path for d in ("moons", "iris")
               for a in client.list_artifacts(parent.info.run_id, f"figures/{d}")}
    assert figures == {f"figures/{d}/{f}" for d in ("moons", "iris") for f in (
        "val_misclassification_heatmaps.png", "val_curves.png", "boundaries.png")}
    by_id = {r.info.run_id: r for r in children}
    for dataset in ("moons", "iris"):
        best = by_id[parent.data.tags[f"annlab.best_run.{dataset}"]]
        assert best.data.params["data.name"] == dataset
        champion = client.get_model_version_by_alias(f"{experiment}-{dataset}", "champion")
        assert champion.run_id == best.info.run_id
    # The printed tables: one per dataset, each under its name.
    assert "\nmoons:\n" in out.stdout and "\niris:\n" in out.stdout
    assert out.stdout.count("registered ") == 2
