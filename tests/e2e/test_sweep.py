"""`make sweep`: nesting, resume, failure isolation, concurrency and launcher independence.

Each test runs the real CLI on a small grid with few epochs, into its own sqlite store.
"""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from annlab import tracking

REPO = Path(__file__).resolve().parents[2]
TINY = ["train.epochs=8", "plot.frames=3", "plot.grid_size=12", "plot.dpi=30",
        "data.n_samples=120", "model.activation=tanh,relu", "model.hidden_nodes=3",
        "train.learning_rate=0.1,0.5"]


def _sweep(tmp_path, uri, *overrides, launcher="basic", popen=False, env=None, **popen_kw):
    args = [sys.executable, "-m", "pipelines.run", "sweep=default", *TINY,
            f"hydra/launcher={launcher}", f"tracking.uri={uri}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]
    if launcher == "joblib":
        args.append("hydra.launcher.n_jobs=2")
    kw = {"cwd": REPO, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True,
          "env": {**os.environ, **(env or {})}}
    return (subprocess.Popen(args, **kw, **popen_kw) if popen
            else subprocess.run(args, timeout=600, **kw))


def _all_runs(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("annlab")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _split(uri):
    runs = _all_runs(uri)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, kids


@pytest.fixture
def uri(tmp_path):
    """A new store, created by annlab: the tests' own MLflow clients poll it while sweeps
    run, and a raw MLflow client creating a store in place races with anyone else."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.connect(uri)
    return uri


def test_one_parent_with_a_child_per_config_and_the_summary(tmp_path, uri):
    # A stray MLFLOW_RUN_ID (MLflow's variable) must not decide where jobs log.
    out = _sweep(tmp_path, uri, env={"MLFLOW_RUN_ID": "0" * 32})
    assert out.returncode == 0, out.stderr
    (parent,), kids = _split(uri)
    assert len(kids) == 4
    # Named by what differs from the default config (README: run names).
    assert {k.info.run_name for k in kids} == {
        f"{act}-h3-lr{lr}-e8-n120" for act in ("tanh", "relu") for lr in ("0.1", "0.5")}
    for kid in kids:
        assert kid.info.status == "FINISHED"
        assert kid.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert kid.data.tags["annlab.sweep"] == parent.data.tags["annlab.sweep"] == "grid"
    assert parent.info.status == "FINISHED"
    best = min(kids, key=lambda k: k.data.metrics["val_misclassification"])
    assert parent.data.metrics["val_misclassification"] == \
        best.data.metrics["val_misclassification"]
    assert parent.data.tags["annlab.best_run"] in {k.info.run_id for k in kids
                                                   if k.data.metrics["val_misclassification"]
                                                   == best.data.metrics["val_misclassification"]}
    client = MlflowClient(uri)
    for kid in kids:  # the parent reached each job through its own config
        cfg = OmegaConf.load(client.download_artifacts(kid.info.run_id, "config/config.yaml",
                                                       str(tmp_path / kid.info.run_id)))
        assert cfg.tracking.parent_run_id == parent.info.run_id
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert files == {"figures/val_misclassification_heatmaps.png", "figures/val_curves.png",
                     "figures/boundaries.png"}
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "sweep_summary.csv",
                                                  str(tmp_path)))
    assert len(table) == 4 and set(table["status"]) == {"FINISHED"}
    assert "[1/4]" in out.stdout and "make ui" in out.stdout
    # The best child's model is registered, and is the champion.
    assert "registered annlab-moons version 1 " in out.stdout
    champion = client.get_model_version_by_alias("annlab-moons", "champion")
    assert champion.run_id == parent.data.tags["annlab.best_run"]


def test_a_failing_config_is_isolated_recorded_and_named(tmp_path, uri):
    out = _sweep(tmp_path, uri, "model.activation=relu", "train.learning_rate=0.1,1e300")
    assert out.returncode != 0
    assert "relu-h3-lr1e+300-e8-n120" in out.stderr and "did not finish" in out.stderr
    (parent,), kids = _split(uri)
    status = {k.info.run_name: k.info.status for k in kids}
    assert status == {"relu-h3-lr0.1-e8-n120": "FINISHED", "relu-h3-lr1e+300-e8-n120": "FAILED"}
    failed = next(k for k in kids if k.info.status == "FAILED")
    assert failed.data.tags["annlab.failure"].startswith("diverged at epoch")
    assert parent.info.status == "FAILED"


def test_a_bad_grid_value_stops_before_any_run(tmp_path, uri):
    out = _sweep(tmp_path, uri, "model.activation=tanh,softmax")
    assert out.returncode != 0
    assert "model.activation='softmax'" in out.stderr
    assert _all_runs(uri) == []


def test_resume_after_sigterm_runs_only_the_missing_configs(tmp_path, uri, sigterm_when):
    proc = _sweep(tmp_path, uri, "train.epochs=3000", popen=True)

    def one_done_one_running():
        kids = _split(uri)[1]
        return any(k.info.status == "FINISHED" for k in kids) and len(kids) >= 2

    stderr = sigterm_when(proc, one_done_one_running, timeout=180)[1]
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "terminated (SIGTERM): closed as KILLED:" in stderr
    assert stderr.strip().endswith("rerun the same command to resume: finished configs are "
                                   "not run again")
    parents, kids = _split(uri)
    assert all(r.info.status != "RUNNING" for r in parents + kids)
    assert parents[0].info.status == "KILLED"
    done_before = {k.info.run_id for k in kids if k.info.status == "FINISHED"}
    assert 1 <= len(done_before) < 4

    out = _sweep(tmp_path, uri, "train.epochs=3000")
    assert out.returncode == 0, out.stderr
    parents_after, kids_after = _split(uri)
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert parents_after[0].info.status == "FINISHED"
    finished = [k for k in kids_after if k.info.status == "FINISHED"]
    hashes = [k.data.tags["annlab.config_hash"] for k in finished]
    assert len(finished) == 4 and len(set(hashes)) == 4  # no duplicate FINISHED child
    assert done_before <= {k.info.run_id for k in finished}  # earlier results kept, not redone
    assert out.stdout.count("already done") == len(done_before)


@pytest.mark.parametrize("when", ["starting", "training"])
def test_ctrl_c_closes_every_run_and_prints_a_line_per_run_no_traceback(tmp_path, uri, when):
    proc = _sweep(tmp_path, uri, "train.epochs=200000", launcher="joblib", popen=True,
                  start_new_session=True)  # its own process group, as a terminal's job
    try:
        if when == "training":
            deadline = time.monotonic() + 180
            while len(_split(uri)[1]) < 2 and time.monotonic() < deadline:
                time.sleep(0.3)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole group
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    before = _split(uri)
    time.sleep(3)  # a job queued before the signal would have started by now
    parents, kids = after = _split(uri)
    assert [[r.info.run_id for r in side] for side in before] == [
        [r.info.run_id for r in side] for side in after]
    assert all(r.info.status == "KILLED" for r in parents + kids)
    if when == "starting":  # before anything was recorded: the one line
        assert lines == ["interrupted (Ctrl-C)"] and not parents, stderr
        return
    assert lines[-1].startswith("rerun the same command to resume")
    assert lines[0] == "interrupted (Ctrl-C): closed as KILLED:"
    for run in parents + kids:  # a line for each run, whichever process closed it
        assert any(run.info.run_id in line for line in lines[1:-1]), (run.info.run_name, stderr)


def _writer(uri, k, steps):
    history = pd.DataFrame({"a": [float(k * 100_000 + s) for s in range(steps)],
                            "b": [float(s) for s in range(steps)]}, index=range(1, steps + 1))
    with tracking.open(uri, "annlab").start_run(f"writer-{k}") as run:
        for chunk in range(0, steps, 250):  # several transactions each, interleaving
            run.log_history(history.iloc[chunk:chunk + 250])


@pytest.mark.parametrize("when", ["together", "later", "resuming together"])
def test_the_same_sweep_launched_twice_runs_each_config_once(tmp_path, uri, when):
    """Two terminals, one grid: one launch runs it and the other says so and starts nothing;
    no run of the live launch is closed."""
    if when == "resuming together":  # both find the finished parent at once
        assert _sweep(tmp_path / "first", uri).returncode == 0
    first = _sweep(tmp_path / "a", uri, launcher="joblib", popen=True)
    if when == "later":  # the first holds its parent, paused while the second starts
        deadline = time.monotonic() + 120
        while not _split(uri)[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGSTOP)
        try:
            second = _sweep(tmp_path / "b", uri, launcher="joblib", popen=True)
            second.wait(timeout=300)
        finally:
            os.kill(first.pid, signal.SIGCONT)
    else:
        second = _sweep(tmp_path / "b", uri, launcher="joblib", popen=True)
    outs = {proc: proc.communicate(timeout=600) for proc in (first, second)}
    codes = sorted(proc.returncode for proc in outs)
    assert codes == [0, 1], outs
    (refused,) = [err for proc, (_, err) in outs.items() if proc.returncode == 1]
    assert refused.strip().splitlines()[-1].startswith("error: this sweep is running already:"
                                                       " its parent sweep-grid-"), refused
    assert "Traceback" not in refused
    parents, kids = _split(uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 4 and {k.info.status for k in kids} == {"FINISHED"}
    assert len({k.data.tags["annlab.config_hash"] for k in kids}) == 4
    assert all("annlab.failure" not in r.data.tags for r in parents + kids)


def test_concurrent_writers_lose_no_metric_point(tmp_path, uri):
    experiment_id = tracking.open(uri, "annlab").id
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(uri, k, 1000)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    client = MlflowClient(uri)
    runs = client.search_runs([experiment_id])
    assert len(runs) == 4
    for run in runs:
        k = int(run.info.run_name.split("-")[1])
        points = client.get_metric_history(run.info.run_id, "a")
        assert sorted(p.value for p in points) == [float(k * 100_000 + s) for s in range(1000)]
        assert run.info.status == "FINISHED"


def test_same_config_same_curves_under_basic_and_joblib(tmp_path):
    curves = {}
    for launcher in ("basic", "joblib"):
        uri = f"sqlite:///{tmp_path / launcher}.db"
        out = _sweep(tmp_path / launcher, uri, launcher=launcher)
        assert out.returncode == 0, out.stderr
        client = MlflowClient(uri)
        curves[launcher] = {
            (k.info.run_name, key): [(m.step, m.value) for m in sorted(
                client.get_metric_history(k.info.run_id, key), key=lambda m: m.step)]
            for k in _split(uri)[1]
            for key in ("train_loss", "val_loss", "train_misclassification",
                        "val_misclassification")}
    assert len(curves["basic"]) == 16
    assert curves["basic"] == curves["joblib"]  # float equality: bitwise



@pytest.mark.parametrize("kind", ["sweep", "study"])
def test_a_store_refused_while_the_workers_start_is_one_line(tmp_path, kind):
    # With the joblib launcher the workers start as soon as the configs pass their checks,
    # while the launching process opens the store. Here the store is a "server" that accepts
    # connections and never answers (given up after annlab's 5 s), and the fork server starts
    # 6 s late: a process that stopped then would leave its workers to be forked after it
    # exited, to find the pool's semaphores gone and print tracebacks under its one line.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        args = (["sweep=default", *TINY] if kind == "sweep" else
                ["tune=default", "train.epochs=8", f"tune.storage=sqlite:///{tmp_path}/o.db"])
        path = os.pathsep.join([str(REPO / "tests" / "scripts" / "slow_forkserver"),
                                os.environ.get("PYTHONPATH", "")])
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.run", *args, "hydra/launcher=joblib",
             "hydra.launcher.n_jobs=2", f"tracking.uri={uri}",
             f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=REPO, capture_output=True,
            text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": path, "ANNLAB_TEST_FORKSERVER_DELAY": "6"})
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"tracking server {uri} is unreachable" in lines[0], out.stderr


def test_joblib_workers_are_forks_of_one_server_capped_like_jobs_own_workers():
    # What annlab's joblib adapter relies on (hydra_plugins/annlab_sweeper/_workers.py): loky's
    # forkserver start method forks every worker from one server; and joblib's caps on each
    # worker's BLAS/OpenMP threads (cores // workers), which loky passes only to processes it
    # starts itself, reach the forks through the server's environment.
    out = subprocess.run([sys.executable, str(REPO / "tests" / "scripts" / "worker_threads.py"),
                          "2"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    share = max((os.cpu_count() or 1) // 2, 1)
    workers = json.loads(out.stdout.strip().splitlines()[-1])
    assert len({w["pid"] for w in workers}) == 2 and len({w["parent"] for w in workers}) == 1
    for worker in workers:
        assert worker["OMP_NUM_THREADS"] == worker["OPENBLAS_NUM_THREADS"] == str(share)
        assert worker["pools"] == [share]


def test_the_launching_process_imports_neither_scikit_learn_nor_matplotlib_before_jobs(
        tmp_path, uri):
    out = subprocess.run(
        [sys.executable, str(REPO / "tests" / "scripts" / "sweep_imports.py"), "sweep=default",
         *TINY, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"tracking.uri={uri}",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=600)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["at launch"] == []  # start-up pays for neither
    assert "sklearn" not in seen["at end"]  # matplotlib only for the summary figures
    assert len(_split(uri)[1]) == 4
