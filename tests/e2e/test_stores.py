"""Stores that several processes or a real `mlflow server` share: created whole, datasets linked
once, runs tracked through the server."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from annlab import tracking
from annlab.model_io import features


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1, in its own process group, stopped afterwards."""
    import signal

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


def test_a_run_tracks_into_an_mlflow_server(mlflow_server, fast_spec, tmp_path,
                                            global_tracking_uri):
    import mlflow.pyfunc

    from annlab.pipeline import run_experiment

    result = run_experiment(fast_spec(f"tracking.uri={mlflow_server}"), [], tmp_path)
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and len(
        client.get_metric_history(result.run_id, "val_loss")) == 60
    assert {a.path for a in client.list_artifacts(result.run_id, "figures")} >= {
        "figures/boundary.gif", "figures/misclassification.png"}
    with global_tracking_uri(mlflow_server):  # runs:/ resolves through MLflow's global URI
        model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    assert model.predict(features(np.array([[-1.0, 0.5]]))).tolist() == [0]


def _open_and_log(uri):
    with tracking.open(uri, "annlab").start_run("r") as run:
        run.log_metrics({"x": 1.0})


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


def _first_use(kind, url, barrier):
    """Open a new database as `make run` (an MLflow store) or `make tune` (an Optuna storage)
    does, at the same moment as the other processes; then use it."""
    if kind == "optuna":
        import optuna

        from annlab import study

        barrier.wait()
        optuna.create_study(storage=study.storage(url), study_name="s", load_if_exists=True)
    else:
        barrier.wait()
        _open_and_log(url)


@pytest.mark.parametrize("kind", ["mlflow", "optuna"])
def test_processes_opening_a_new_postgresql_database_at_once_all_succeed(postgres, kind):
    """Whichever process makes the tables, the others wait and use them (without the lock one
    of three failed on a duplicate row of PostgreSQL's catalog every time)."""
    import multiprocessing

    import optuna

    url = postgres.create_database(f"first_{kind}")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_first_use, args=(kind, url, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():  # hung: not left holding connections to the test's cluster
            p.terminate()
    assert [p.exitcode for p in procs] == [0] * 3
    if kind == "mlflow":
        assert len(tracking.open(url, "annlab").search("")) == 3
    else:
        assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["s"]


@pytest.mark.parametrize("kind", ["mlflow", "optuna"])
def test_a_process_stuck_making_a_new_databases_tables_is_one_line_not_a_hang(postgres, kind,
                                                                            monkeypatch):
    import sqlalchemy

    from annlab import databases, study

    url = postgres.create_database(f"stuck_{kind}")
    monkeypatch.setattr(databases, "CREATING_SECONDS", 1)
    holder = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with holder.connect() as conn:  # another process, making the tables, stopped (Ctrl-Z)
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"),
                     {"k": databases.CREATING_LOCK})
        with pytest.raises(databases.DatabaseError, match=r"(tracking URI|tune\.storage)=postgres"
                           r".*another process has been making its tables for 1 s"):
            tracking.connect(url) if kind == "mlflow" else study.storage(url)
    holder.dispose()
    assert databases.tables(url, "k") == set()  # nothing was made


def _log_same_data(uri, experiment, barrier):
    from annlab.model_io import table

    with tracking.open(uri, experiment).start_run("r") as run:
        X, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 2
        barrier.wait()  # both look the datasets up before either inserts them
        run.log_datasets("moons", {"train": table(X, y, ["x1", "x2"], "target"),
                                   "validation": table(X[:4], y[:4], ["x1", "x2"], "target")},
                         {"train": "d1", "validation": "d2"},
                         {"train": {"seed": 0}, "validation": {"seed": 0}}, "target")


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


REPO = Path(__file__).resolve().parents[2]
QUICK = ["train.epochs=5", "plot.frames=2", "plot.image_steps=2", "plot.grid_size=20",
         "plot.dpi=30"]


def _cli(*argv: str, env: dict | None = None, prefix: tuple = ()):
    return subprocess.run([*prefix, sys.executable, *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_a_store_on_a_read_only_file_system_is_refused_in_one_line(tmp_path):
    from tests.servers import unavailable

    if not shutil.which("unshare"):
        unavailable("a read-only mount needs unshare (util-linux)")
    store = tmp_path / "store"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    made = _cli("-m", "pipelines.run", *QUICK, f"tracking.uri={uri}",
                f"hydra.run.dir={tmp_path / 'run'}")
    assert made.returncode == 0, made.stderr
    run_id = MlflowClient(uri).search_runs(["1"])[0].info.run_id
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    # a mount namespace of this process's own, where the store's directory is read-only
    ro = ("unshare", "-rm", "sh", "-c", f"mount --bind {store} {store} && mount -o "
          f"remount,bind,ro {store} && exec \"$0\" \"$@\"")
    if _cli("-c", "", prefix=ro).returncode != 0:
        unavailable("cannot make a read-only mount (unshare -rm)")
    env = {"MLFLOW_TRACKING_URI": uri}
    for argv in (["-m", "pipelines.run", *QUICK, f"hydra.run.dir={tmp_path / 'r2'}"],
                 ["-m", "pipelines.reproduce", run_id], ["-m", "pipelines.register", run_id]):
        done = _cli(*argv, env=env, prefix=ro)
        assert done.returncode != 0, argv
        assert done.stderr.strip().splitlines() == [
            f"error: tracking store {store / 'mlflow.db'} cannot be written (read-only file "
            "system or no permission); copy it somewhere writable and set tracking.uri / "
            "MLFLOW_TRACKING_URI to the copy"], (argv, done.stderr)
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("argv, key", [
    (["-m", "pipelines.run", "paths.runs={bad}"], "paths.runs"),
    (["-m", "pipelines.run", "hydra.run.dir={bad}/x"], "hydra.run.dir"),
    (["-m", "pipelines.run", "sweep=default", "paths.multiruns={bad}"], "paths.multiruns"),
    (["-m", "pipelines.data", "paths.data={bad}"], "paths.data"),
    (["-m", "pipelines.figures", "paths.figures={bad}"], "paths.figures"),
    (["-m", "pipelines.server", "--artifacts", "{bad}", "--port", "0"], "ARTIFACTS"),
    (["-m", "pipelines.server", "--db", "sqlite:///{bad}/m.db", "--port", "0"],
     "DB (its directory)"),
])
@pytest.mark.parametrize("bad", ["/proc/annlab", "FILE"])
def test_a_directory_that_cannot_be_made_is_one_line_before_anything_runs(tmp_path, argv, key,
                                                                         bad):
    if bad == "FILE":  # a file where a directory should be
        bad = tmp_path / "a-file"
        bad.write_text("")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = _cli(*[a.format(bad=bad) for a in argv], f"tracking.uri={uri}"
                if argv[1] != "pipelines.server" else "--state-dir=" + str(tmp_path / "s"))
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    shown = str(bad) + ("/x" if key == "hydra.run.dir" else "")
    assert line.startswith(f"error: invalid config: {key}='{shown}"), line
    assert "allowed: a directory annlab can create and write in" in line
    assert not (tmp_path / "mlflow.db").exists()  # no store, no run


@pytest.mark.parametrize("after", [0.0, 0.05, 0.3])
def test_a_store_another_mlflow_client_is_creating_is_waited_for(tmp_path, after):
    """The UI or a notebook creating the store in place runs its migrations one by one; annlab
    opening it meanwhile waits for them instead of migrating beside them."""
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    other = subprocess.Popen([sys.executable, "-c", "from mlflow.tracking import MlflowClient; "
                              f"MlflowClient({uri!r}).search_experiments()"],
                             stderr=subprocess.PIPE, text=True)
    try:
        while not db.exists() and other.poll() is None:
            time.sleep(0.002)
        time.sleep(after)
        experiment = tracking.open(uri, "annlab")
    finally:
        _, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    assert MlflowClient(uri).get_experiment(experiment.id).name == "annlab"
