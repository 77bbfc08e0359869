"""A user's own data through the commands: `make data` writes a dataset's splits as files, a run
trains from them to the same bits as from the generated data and records the files as its
datasets, `make reproduce` checks the files' content, and a sweep over two tables keeps them
apart."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from annlab.pipeline import run_experiment

REPO = Path(__file__).resolve().parents[2]
QUICK = ["train.epochs=30", "plot.frames=3", "plot.image_steps=2", "plot.grid_size=12",
         "plot.dpi=30"]


def _cli(module, *args, env=None):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def iris_files(tmp_path_factory):
    """`make data ARGS='data=iris'`'s output: {split: path}, and what it printed."""
    out_dir = tmp_path_factory.mktemp("data")
    out = _cli("pipelines.data", "data=iris", f"paths.data={out_dir}",
               f"hydra.run.dir={out_dir / 'hydra'}")
    assert out.returncode == 0, out.stderr
    files = {split: out_dir / "iris" / f"{split}.csv" for split in ("train", "validation",
                                                                     "test")}
    return files, out.stdout


def test_make_data_writes_three_headed_csv_files_and_says_how_to_train(iris_files):
    files, printed = iris_files
    for split, rows in (("train", 90), ("validation", 30), ("test", 30)):
        table = pd.read_csv(files[split])
        assert list(table.columns) == ["x1", "x2", "x3", "x4", "target"] and len(table) == rows
    assert set(pd.read_csv(files["train"])["target"]) == {"setosa", "versicolor", "virginica"}
    assert "make run ARGS='data=file data.train=" in printed and "data.target=target'" in printed


def test_a_run_from_the_files_is_the_generated_runs_bits_and_records_its_files(
        iris_files, resolved, store_uri, experiment, tmp_path):
    files, _ = iris_files
    where = [f"tracking.uri={store_uri}", f"tracking.experiment={experiment}"]
    generated = run_experiment(resolved(["data=iris", *QUICK, *where]), [], tmp_path / "a")
    out = _cli("pipelines.run", "data=file", "data.target=target", *QUICK, *where,
               *(f"data.{split}={path}" for split, path in files.items()),
               f"hydra.run.dir={tmp_path / 'b'}")
    assert out.returncode == 0, out.stderr
    client = MlflowClient(store_uri)
    exp = client.get_experiment_by_name(experiment)
    (run,) = [r for r in client.search_runs([exp.experiment_id])
              if r.info.run_id != generated.run_id]
    assert run.info.run_name == "iris-tanh-h10-lr0.5-e30"  # named after the files' folder
    for key in ("val_loss", "train_misclassification"):
        ours, theirs = ([(m.step, m.value) for m in sorted(
            client.get_metric_history(r, key), key=lambda m: m.step)]
            for r in (run.info.run_id, generated.run_id))
        assert ours == theirs
    assert run.data.tags["annlab.data_hash"] == \
        client.get_run(generated.run_id).data.tags["annlab.data_hash"]
    # Each split is a dataset input with its file as source and its columns as schema.
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation", "test"}
    for split, dataset in inputs.items():
        assert dataset.name == "iris" and json.loads(dataset.source)["uri"] == str(files[split])
        assert [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]] == [
            "x1", "x2", "x3", "x4", "target"]
    assert run.data.params["data.train"] == str(files["train"])
    assert len(run.data.params["data.sha256.train"]) == 64


def test_reproduce_names_a_changed_file_and_accepts_a_moved_one(iris_files, resolved,
                                                               store_uri, experiment, tmp_path):
    files, _ = iris_files
    own = {split: shutil.copy(path, tmp_path / path.name) for split, path in files.items()}
    spec = resolved(["data=file", "data.target=target", *QUICK, f"tracking.uri={store_uri}",
                     f"tracking.experiment={experiment}",
                     *(f"data.{split}={path}" for split, path in own.items())])
    result = run_experiment(spec, [], tmp_path / "run")
    moved = tmp_path / "elsewhere.csv"
    shutil.move(own["validation"], moved)  # the same bytes under another name
    out = _cli("pipelines.reproduce", result.run_id, "--uri", store_uri,
               f"data.validation={moved}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "identical:" in out.stdout and "3 data files' content" in out.stdout
    table = pd.read_csv(own["train"])
    table.loc[0, "x1"] += 0.5
    table.to_csv(own["train"], index=False)
    out = _cli("pipelines.reproduce", result.run_id, "--uri", store_uri,
               f"data.validation={moved}")
    assert out.returncode == 1
    assert (f"data file {own['train']} (data.train) changed since the run" in out.stdout
            and "the first split that differs: train" in out.stdout)


def test_a_sweep_over_two_tables_keeps_each_apart(store_uri, experiment, tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for name, shift in (("north", 0.0), ("south", 1.0)):
        frame = pd.DataFrame(rng.normal(size=(120, 2)) + shift, columns=["lat", "lon"])
        frame["zone"] = np.where(frame["lat"] > shift, "high", "low")
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        paths.append(f"{name}.csv")
    out = _cli("pipelines.run", "sweep=default", "data=file", "data.target=zone",
               f"data.path={','.join(paths)}", "model.activation=tanh", "model.hidden_nodes=3",
               "train.learning_rate=0.5", *QUICK, f"tracking.uri={store_uri}",
               f"tracking.experiment={experiment}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
               "hydra/launcher=basic", env={"PWD": str(tmp_path)})
    assert out.returncode != 0  # the paths are relative to the directory run from, not here
    assert "north.csv" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.run", "sweep=default", "data=file", "data.target=zone",
         f"data.path={','.join(paths)}", "model.activation=tanh", "model.hidden_nodes=3",
         "train.learning_rate=0.5", *QUICK, f"tracking.uri={store_uri}",
         f"tracking.experiment={experiment}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
         "hydra/launcher=basic"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    client = MlflowClient(store_uri)
    for name in ("north", "south"):
        champion = client.get_model_version_by_alias(f"{experiment}-{name}", "champion")
        assert client.get_run(champion.run_id).data.params["data.path"] == str(
            tmp_path / f"{name}.csv")
    assert "\nnorth:\n" in out.stdout and "\nsouth:\n" in out.stdout
