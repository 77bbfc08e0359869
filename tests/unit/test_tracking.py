"""The MLflow module: one-time store set-up, runs that always end, a dead server said fast."""

import socket
import time

import pytest
from mlflow.tracking import MlflowClient

from annlab import names, tracking
from annlab.paths import default_paths
from annlab.tracking import liveness


def test_a_new_stores_default_experiment_keeps_its_artifacts_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")  # not where the store is
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    default = tracking.open(uri, "Default")
    assert default.id == "0"
    location = MlflowClient(uri).get_experiment("0").artifact_location
    assert location == (tmp_path / "store" / "mlartifacts").as_uri()


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


def test_bad_stores_are_refused_in_one_line_within_seconds(tmp_path, store_uri):
    import shutil
    import sqlite3

    import optuna

    tracking.open(store_uri, "annlab")  # the store exists
    truncated = tmp_path / "truncated.db"
    shutil.copyfile(store_uri.removeprefix("sqlite:///"), truncated)
    with truncated.open("r+b") as f:
        f.truncate(truncated.stat().st_size // 3)
    (tmp_path / "garbage.db").write_text("not a database\n")
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", study_name="s")
    with sqlite3.connect(tmp_path / "app.db") as con:
        con.execute("CREATE TABLE users (name TEXT)")
    cases = {"ftp://x": "is not a tracking store",
             "sqlite:////proc/annlab/x.db": "cannot create the tracking store",
             f"sqlite:///{truncated}": "cannot use tracking URI=.*: database disk image",
             f"sqlite:///{tmp_path / 'garbage.db'}": "cannot use tracking URI=.*: file is not a",
             f"sqlite:///{tmp_path / 'optuna.db'}": "holds an Optuna study storage, not an "
                                                    "MLflow store; annlab wrote nothing",
             f"sqlite:///{tmp_path / 'app.db'}": "holds tables that are not MLflow's: users"}
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for uri, expected in cases.items():
        start = time.monotonic()
        with pytest.raises(tracking.TrackingError, match=expected) as info:
            tracking.open(uri, "annlab")
        assert time.monotonic() - start < 10 and "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written


def test_a_relative_sqlite_store_is_where_the_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.resolve_uri("sqlite:///rel/mlflow.db", "unused")
    assert uri == f"sqlite:///{tmp_path}/rel/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert tracking.resolve_uri(None, "unused") == f"sqlite:///{tmp_path}/env.db"
    experiment = tracking.open(uri, "annlab")
    location = experiment.store.client.get_experiment(experiment.id).artifact_location
    assert location == f"file://{tmp_path}/rel/mlartifacts"


def test_runs_whose_process_is_gone_are_closed_as_killed_when_the_store_is_opened(
        store_uri, experiment):
    from annlab.tracking.liveness import ProcessId

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
    monkeypatch.setattr(liveness, "HEARTBEAT_SECONDS", 0.2)
    with tracking.open(store_uri, experiment).start_run("r") as run:
        first = run.record().tags[names.HEARTBEAT]
        time.sleep(1.5)
        later = run.record().tags[names.HEARTBEAT]
    assert int(later) > int(first)


@pytest.mark.parametrize("uri, expected", [
    ("mysql://nobody@127.0.0.1:1/x", "'mysql' needs the Python module 'MySQLdb'"),
    ("mssql://nobody@127.0.0.1:1/x", "'mssql' needs the Python module 'pyodbc'"),
    ("mysql+pymysql://nobody@127.0.0.1:1/x", "needs the Python module 'pymysql'"),
    ("postgresql+psycopg://nobody:hunter2@127.0.0.1:1/x", "Connection refused"),
])
def test_a_database_store_without_its_driver_or_an_answer_is_one_line_in_seconds(uri,
                                                                                expected):
    start = time.monotonic()
    with pytest.raises(tracking.TrackingError, match=expected) as info:
        tracking.open(uri, "annlab")
    message = str(info.value)
    assert time.monotonic() - start < 10 and "\n" not in message and "hunter2" not in message
    assert "sqlite:///<path>" in message or "Connection refused" in message


def test_a_run_says_what_made_it(store_uri, experiment):
    exp = tracking.open(store_uri, experiment)
    client = MlflowClient(store_uri)

    def kind(tags):
        return Run(exp.store, client.create_run(exp.id, tags=tags).info.run_id).record().kind

    from annlab.tracking import Run

    parent = client.create_run(exp.id, tags={names.SWEEP: "g"}).info.run_id
    assert kind({names.SWEEP: "g"}) == "sweep"
    assert kind({names.SWEEP: "g", names.PARENT_RUN: parent, names.CONFIG_HASH: "h"}) == "run"
    assert kind({names.STUDY: "s"}) == "study"
    assert kind({names.REPRODUCES: parent}) == "verdict"
    assert kind({}) == "other"


def test_step_images_are_stored_as_mlflows_log_image_stores_them(store_uri, experiment,
                                                                tmp_path):
    """The UI's image card finds images by these names; MLflow's own log_image is the
    reference, so a change in MLflow's naming fails here rather than in a browser."""
    import re

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "b.png")
    exp = tracking.open(store_uri, experiment)
    client = MlflowClient(store_uri)
    with exp.start_run("ours") as ours:
        tags = ours.log_images("boundary", {7: tmp_path / "b.png"})
        ours.client.set_tag(ours.run_id, *next(iter(tags.items())))
    theirs = client.create_run(exp.id).info.run_id
    client.log_image(theirs, Image.open(tmp_path / "b.png"), key="boundary", step=7)

    def stored(run_id):
        shape = re.compile(r"\+timestamp\+\d+\+[0-9a-f-]{36}")
        files = {shape.sub("+timestamp+T+ID", f.path): f.path
                 for f in client.list_artifacts(run_id, "images")}
        logged = {k: v for k, v in client.get_run(run_id).data.tags.items()
                  if k == names.LOGGED_IMAGES}
        return files, logged

    (ours_files, ours_tags), (their_files, their_tags) = stored(ours.run_id), stored(theirs)
    assert set(ours_files) == set(their_files) == {
        "images/boundary+step+7+timestamp+T+ID.png",
        "images/boundary+step+7+timestamp+T+ID+compressed.webp"}
    assert ours_tags == their_tags == {names.LOGGED_IMAGES: "True"}
    def fetch(run_id, path):
        return client.download_artifacts(run_id, path, str(tmp_path / run_id))

    png = fetch(ours.run_id, ours_files["images/boundary+step+7+timestamp+T+ID.png"])
    np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), pixels)
    thumb = "images/boundary+step+7+timestamp+T+ID+compressed.webp"
    with (Image.open(fetch(ours.run_id, ours_files[thumb])) as mine,
          Image.open(fetch(theirs, their_files[thumb])) as reference):
        assert (mine.format, mine.size) == (reference.format, reference.size)
        assert mine.format == "WEBP"
