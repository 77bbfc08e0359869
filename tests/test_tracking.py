"""The MLflow module: one-time store set-up, runs that always end, a dead server said fast."""

import socket
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from annlab import names, tracking
from annlab.paths import default_paths


def test_open_creates_the_experiment_once_with_its_kind(store_uri, experiment):
    first = tracking.open(store_uri, experiment).id
    assert tracking.open(store_uri, experiment).id == first
    exp = MlflowClient(store_uri).get_experiment(first)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location.endswith("/mlartifacts")


@pytest.mark.parametrize("raised, status", [(RuntimeError("boom"), "FAILED"),
                                            (KeyboardInterrupt(), "KILLED")])
def test_a_run_that_raises_ends_with_a_status_and_reason(store_uri, experiment, raised, status):
    exp = tracking.open(store_uri, experiment)
    with pytest.raises(type(raised)), exp.start_run("r") as run:
        run.log_metrics({"x": 1.0})
        raise raised
    got = MlflowClient(store_uri).get_run(run.run_id)
    assert got.info.status == status
    assert got.data.tags[names.FAILURE] == {"FAILED": "boom",
                                            "KILLED": "interrupted (Ctrl-C)"}[status]
    assert got.data.metrics["x"] == 1.0  # what was recorded stays


def test_history_is_logged_whole_in_batches(store_uri, experiment):
    import pandas as pd

    exp = tracking.open(store_uri, experiment)
    history = pd.DataFrame({"a": range(1500), "b": range(1500)}, index=range(1, 1501))
    with exp.start_run("r") as run:
        run.log_history(history)
    points = MlflowClient(store_uri).get_metric_history(run.run_id, "b")
    assert sorted((p.step, p.value) for p in points) == [(i + 1, float(i)) for i in range(1500)]


def test_unreachable_server_is_reported_within_seconds():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    start = time.monotonic()
    with pytest.raises(tracking.TrackingError, match="unreachable"):
        tracking.open(f"http://127.0.0.1:{port}", "x")
    assert time.monotonic() - start < 10


def test_uri_precedence(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/env.db")
    default = default_paths().store
    assert tracking.resolve_uri("sqlite:////tmp/cfg.db", default) == "sqlite:////tmp/cfg.db"
    assert tracking.resolve_uri(None, default) == "sqlite:////tmp/env.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.resolve_uri(None, default) == default
    assert default == f"sqlite:///{default_paths().outputs}/mlflow.db"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1, in its own process group, stopped afterwards."""
    import os
    import signal
    import subprocess
    import sys

    import requests

    root = tmp_path_factory.mktemp("server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "art"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{uri}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start within 120 s")
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_run_tracks_into_an_mlflow_server(mlflow_server, fast_cfg, tmp_path,
                                            global_tracking_uri):
    import mlflow.pyfunc

    from annlab.pipeline import run_experiment

    result = run_experiment(fast_cfg(f"tracking.uri={mlflow_server}"), [], tmp_path)
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and len(
        client.get_metric_history(result.run_id, "val_loss")) == 60
    assert {a.path for a in client.list_artifacts(result.run_id, "figures")} >= {
        "figures/boundary.gif", "figures/misclassification.png"}
    with global_tracking_uri(mlflow_server):  # runs:/ resolves through MLflow's global URI
        model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    assert model.predict(np.array([[-1.0, 0.5]])).tolist() == [0]


def _open_and_log(uri):
    with tracking.open(uri, "annlab").start_run("r") as run:
        run.log_metrics({"x": 1.0})


@pytest.mark.slow
def test_processes_opening_a_new_store_at_once_all_succeed_and_leave_it_whole(tmp_path):
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_and_log, args=(uri,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * 4
    exp = tracking.open(uri, "annlab")  # and the store stays usable
    assert len(exp.search("")) == 4
    assert not list((tmp_path / "new").glob(".*.new"))  # no half-built leftovers


def _log_same_data(uri, experiment, barrier):
    with tracking.open(uri, experiment).start_run("r") as run:
        X, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 2
        barrier.wait()  # both look the datasets up before either inserts them
        run.log_datasets("moons", {"train": (X, y), "validation": (X[:4], y[:4])},
                         {"train": "d1", "validation": "d2"}, {"seed": 0})


@pytest.mark.slow
def test_runs_logging_the_same_data_at_once_both_record_it(tmp_path):
    """A sweep's first jobs log identical datasets together: MLflow's look-up-then-insert lets
    both miss them, and the later insert broke a uniqueness constraint (a FAILED config)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork of a threaded test process
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for round_ in range(2):  # without the retry, every round failed one of the two
        experiment = f"same-data-{round_}"
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_log_same_data, args=(uri, experiment, barrier))
                 for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0]
    client = MlflowClient(uri)
    for round_ in range(2):
        exp = client.get_experiment_by_name(f"same-data-{round_}")
        runs = client.search_runs([exp.experiment_id])
        assert [r.info.status for r in runs] == ["FINISHED"] * 2
        for run in runs:
            assert sorted(i.dataset.digest for i in run.inputs.dataset_inputs) == ["d1", "d2"]


def test_bad_stores_are_refused_in_one_line_within_seconds(tmp_path, store_uri):
    import shutil

    tracking.open(store_uri, "annlab")  # the store exists
    truncated = tmp_path / "truncated.db"
    shutil.copyfile(store_uri.removeprefix("sqlite:///"), truncated)
    with truncated.open("r+b") as f:
        f.truncate(truncated.stat().st_size // 3)
    (tmp_path / "garbage.db").write_text("not a database\n")
    cases = {"ftp://x": "is not a tracking store",
             "sqlite:////proc/annlab/x.db": "cannot create the tracking store",
             f"sqlite:///{truncated}": "is not a usable MLflow store",
             f"sqlite:///{tmp_path / 'garbage.db'}": "is not a usable MLflow store"}
    for uri, expected in cases.items():
        start = time.monotonic()
        with pytest.raises(tracking.TrackingError, match=expected) as info:
            tracking.open(uri, "annlab")
        assert time.monotonic() - start < 10 and "\n" not in str(info.value)


def test_runs_whose_process_is_gone_are_closed_as_killed_when_the_store_is_opened(
        store_uri, experiment):
    from annlab.provenance import ProcessId

    exp = tracking.open(store_uri, experiment)
    me = ProcessId.current()
    gone = ProcessId(me.host, me.boot, 2**22 + 1, "0")  # above Linux's largest pid
    tags = {
        "dead here": {names.PROCESS: str(gone)},
        "alive here": {names.PROCESS: str(me)},
        "silent elsewhere": {names.PROCESS: f"far-away {me.boot} 7 1", names.HEARTBEAT: "1"},
        "beating elsewhere": {names.PROCESS: f"far-away {me.boot} 7 1",
                              names.HEARTBEAT: str(int(time.time()))},
        "not annlab's": {},
    }
    client = MlflowClient(store_uri)
    ids = {name: client.create_run(exp.id, run_name=name, tags=t).info.run_id
           for name, t in tags.items()}
    closed = tracking.open(store_uri, experiment).close_dead_runs()
    assert {r.run_name for r in closed} == set()  # opening already closed them
    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {"dead here": "KILLED", "alive here": "RUNNING",
                      "silent elsewhere": "KILLED", "beating elsewhere": "RUNNING",
                      "not annlab's": "RUNNING"}
    reason = client.get_run(ids["dead here"]).data.tags[names.FAILURE]
    assert "ended without closing the run" in reason and "SIGKILL" in reason


def test_a_live_run_renews_its_heartbeat(store_uri, experiment, monkeypatch):
    monkeypatch.setattr(tracking, "HEARTBEAT_SECONDS", 0.2)
    with tracking.open(store_uri, experiment).start_run("r") as run:
        first = run.record().tags[names.HEARTBEAT]
        time.sleep(1.5)
        later = run.record().tags[names.HEARTBEAT]
    assert int(later) > int(first)
