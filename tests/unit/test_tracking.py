"""The MLflow module: one-time store set-up, runs that always end, a dead server said fast."""

import json
import os
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


def _other_live_process() -> str:
    """The writer id of a process that lives and is not this one nor started by it."""
    from annlab.tracking.liveness import ProcessId, _started

    me = ProcessId.current()
    return str(ProcessId(me.host, me.boot, os.getppid(), _started(os.getppid())))


def _dead_process() -> str:
    from annlab.tracking.liveness import ProcessId

    me = ProcessId.current()
    return str(ProcessId(me.host, me.boot, 2**22 + 1, "0"))


@pytest.mark.parametrize("writer, status, refused", [
    ("other", "RUNNING", True), ("dead", "RUNNING", False), ("other", "FINISHED", False),
    ("other", "KILLED", False)])
def test_a_sweep_another_live_process_runs_is_refused_and_any_other_resumed(
        store_uri, experiment, writer, status, refused):
    exp = tracking.open(store_uri, experiment)
    key = {names.SWEEP: "grid", names.SWEEP_GRID: "g1"}
    parent, resumed = exp.parent_run(key, "sweep-g1", "pipelines/run.py", exclusive=True)
    assert not resumed
    client = MlflowClient(store_uri)
    client.set_tag(parent.run_id, names.PROCESS,
                   _other_live_process() if writer == "other" else _dead_process())
    client.update_run(parent.run_id, status=status)
    if refused:
        with pytest.raises(tracking.runs.AlreadyRunning, match=(
                rf"its parent sweep-g1 \({parent.run_id}\) is written by process "
                rf"{os.getppid()} on .*; nothing was started here")):
            exp.parent_run(key, "sweep-g1", "pipelines/run.py", exclusive=True)
        assert client.get_run(parent.run_id).info.status == "RUNNING"
    else:
        again, resumed = exp.parent_run(key, "sweep-g1", "pipelines/run.py", exclusive=True)
        assert resumed and again.run_id == parent.run_id
        assert client.get_run(parent.run_id).info.status == "RUNNING"
    # a study's parent is shared by its workers: never refused
    study = {names.STUDY: "s", names.STUDY_STORAGE: "x"}
    first, _ = exp.parent_run(study, "study-s", "pipelines/run.py")
    client.set_tag(first.run_id, names.PROCESS, _other_live_process())
    assert exp.parent_run(study, "study-s", "pipelines/run.py")[0].run_id == first.run_id


def test_two_sweeps_that_made_their_parents_at_once_leave_one(store_uri, experiment,
                                                              monkeypatch):
    exp = tracking.open(store_uri, experiment)
    client = MlflowClient(store_uri)
    key = {names.SWEEP: "grid", names.SWEEP_GRID: "g2"}
    # the other launch's parent, made first, which this launch's first look did not see yet
    theirs = client.create_run(exp.id, run_name="sweep-g2", start_time=int(time.time() * 1000)
                               - 1000, tags={**key, names.PROCESS: _other_live_process()})
    search, looks = exp.search, []

    def late(query):  # the first look misses their parent
        looks.append(query)
        return [] if len(looks) == 1 else search(query)

    monkeypatch.setattr(exp, "search", late)
    with pytest.raises(tracking.runs.AlreadyRunning, match=theirs.info.run_id):
        exp.parent_run(key, "sweep-g2", "pipelines/run.py", exclusive=True)
    assert len(looks) == 2  # refused by the second look, after making its own parent
    live = search(f"tags.`{names.SWEEP_GRID}` = 'g2'")
    assert [r.run_id for r in live] == [theirs.info.run_id]  # ours was deleted
    # the one that made its parent first goes on, whoever looks second
    client.set_tag(theirs.info.run_id, names.PROCESS, _dead_process())
    client.set_terminated(theirs.info.run_id, "KILLED")
    mine, resumed = exp.parent_run(key, "sweep-g2", "pipelines/run.py", exclusive=True)
    assert resumed and mine.run_id == theirs.info.run_id


def test_a_stopped_launch_closes_its_own_and_dead_children_only(store_uri, experiment):
    from annlab.tracking.liveness import writer_tags

    exp = tracking.open(store_uri, experiment)
    client = MlflowClient(store_uri)
    parent = client.create_run(exp.id, run_name="p").info.run_id
    writers = {"mine": writer_tags()[names.PROCESS], "dead": _dead_process(),
               "other's": _other_live_process()}
    ids = {who: client.create_run(exp.id, run_name=who, tags={
        names.PARENT_RUN: parent, names.PROCESS: writer}).info.run_id
        for who, writer in writers.items()}
    closed = exp.close_stale_children(parent, "interrupted (Ctrl-C)")
    assert sorted(r.run_name for r in closed) == ["dead", "mine"]
    status = {who: client.get_run(i).info.status for who, i in ids.items()}
    assert status == {"mine": "KILLED", "dead": "KILLED", "other's": "RUNNING"}


def test_a_store_of_an_older_mlflow_is_one_line_after_a_short_look(tmp_path, monkeypatch):
    import shutil
    import sqlite3

    from annlab.tracking import store

    monkeypatch.setattr(store, "SCHEMA_STILL_SECONDS", 0.3)
    db = tmp_path / "old.db"
    shutil.copyfile(store._empty_store(), db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = 'c3d9e7f1a2b4'")
    with pytest.raises(tracking.TrackingError, match="out-of-date database schema .*mlflow "
                                                     "db upgrade") as info:
        tracking.open(f"sqlite:///{db}", "annlab")
    assert "\n" not in str(info.value)


def test_a_tables_schema_is_read_from_its_first_rows_and_its_profile_from_all(
        store_uri, experiment, monkeypatch):
    """MLflow infers a schema value by value; annlab's tables (one dtype a column, nothing
    missing) give the same one from their first rows, and the profile counts every row."""
    import json

    import numpy as np
    from mlflow.data import from_pandas

    from annlab.model_io import table
    from annlab.tracking import runs

    monkeypatch.setattr(runs, "SCHEMA_ROWS", 10)
    X = np.random.default_rng(0).random((250, 3))
    labels = np.array(["setosa", "versicolor"])[np.arange(250) % 2]
    frame = table(X, labels, ["a", "b", "c"], "species")
    with tracking.open(store_uri, experiment).start_run("r") as run:
        run.log_datasets("t", {"train": frame}, {"train": "d"}, {"train": {"seed": 0}},
                         "species")
    (logged,) = MlflowClient(store_uri).get_run(run.run_id).inputs.dataset_inputs
    whole = from_pandas(frame, targets="species", name="t", digest="d").to_dict()
    assert logged.dataset.schema == whole["schema"]
    assert json.loads(logged.dataset.profile) == {"num_rows": 250, "num_elements": 1000}


def _racing_tag_writes(monkeypatch, store_uri, error: str):
    """MlflowClient.set_experiment_tag as it fails when another process writes the same key
    between MLflow's read and its insert: that write lands, then this one raises ``error``;
    returns the list of keys this process tried."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST

    real, tried = MlflowClient.set_experiment_tag, []

    def racing(self, experiment_id, key, value):
        tried.append(key)
        if tried.count(key) == 1:
            real(self, experiment_id, key, "theirs")
            raise MlflowException(error, BAD_REQUEST)
        return real(self, experiment_id, key, value)

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", racing)
    return tried


@pytest.mark.parametrize("existing", [False, True], ids=["new experiment", "untagged one"])
@pytest.mark.parametrize("error", [
    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint '
    '"experiment_tag_pk"', "(sqlite3.IntegrityError) UNIQUE constraint failed: "
    "experiment_tags.key, experiment_tags.experiment_id"], ids=["postgresql", "sqlite"])
def test_experiment_tags_another_process_writes_at_the_same_moment_end_as_ours(
        store_uri, experiment, monkeypatch, existing, error):
    client = MlflowClient(store_uri)
    if existing:  # made by plain MLflow: annlab adds its kind tag and views on first open
        client.create_experiment(experiment)
    tried = _racing_tag_writes(monkeypatch, store_uri, error)
    exp = tracking.open(store_uri, experiment)
    tags = client.get_experiment(exp.id).tags
    assert tried and all(tried.count(key) == 2 for key in tried)  # each tried once more
    assert tags[names.EXPERIMENT_KIND] == "custom_model_development"
    views = [k for k in tags if k.startswith(names.SHARED_VIEW)]
    assert views and all(json.loads(tags[k])["state"] for k in views)


def test_an_experiment_tag_that_fails_otherwise_is_not_tried_again(store_uri, experiment,
                                                                    monkeypatch):
    tried = _racing_tag_writes(monkeypatch, store_uri, "INVALID_PARAMETER_VALUE: too long")
    with pytest.raises(tracking.TrackingError, match="too long"):
        tracking.open(store_uri, experiment)
    assert len(tried) == 1


def test_launches_opening_a_new_experiment_at_once_share_it(store_uri, experiment):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: tracking.open(store_uri, experiment).id, range(8)))
    assert len(ids) == 1
    tags = MlflowClient(store_uri).get_experiment(ids.pop()).tags
    assert tags[names.EXPERIMENT_KIND] == "custom_model_development"
