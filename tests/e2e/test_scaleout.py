"""A shared tracking server on PostgreSQL, and sweeps on a Ray cluster, end to end.

Runs and sweeps log through a real `mlflow server` over a throwaway PostgreSQL (one per test
module, restarted when a test stopped it); Ray sweeps run on a two-node cluster inside a
network namespace with only `lo` (tests/servers.py). Everything is checked through MLflow's API
(and PostgreSQL itself): every run nested and closed, every per-epoch point present exactly
once, across server restarts, outages, concurrency and a lost Ray node.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from annlab import tracking
from annlab.model_io import features
from annlab.pipeline import build_data, run_experiment
from tests.servers import MlflowServer, assert_loopback_only, descendants, free_port, kill_pids

REPO = Path(__file__).resolve().parents[2]
TINY = ["plot.frames=3", "plot.grid_size=12", "plot.dpi=30", "data.n_samples=120"]
CURVES = ("train_loss", "val_loss", "train_misclassification", "val_misclassification")
# Jobs that train for a few seconds (mini-batches of one) without many points to log.
SLOW_JOB = ["train.batch_size=1", "train.epochs=600"]


# --- helpers ---------------------------------------------------------------------------------

def sweep_argv(sweep_dir: Path, uri: str, experiment: str, *overrides: str,
               launcher: str = "basic") -> list[str]:
    """`make sweep` on a small grid; the command line replaces every key of the default grid."""
    argv = [sys.executable, "-m", "pipelines.run", "sweep=default", *TINY,
            f"hydra/launcher={launcher}", f"tracking.uri={uri}",
            f"tracking.experiment={experiment}", f"hydra.sweep.dir={sweep_dir}", *overrides]
    return argv + (["hydra.launcher.n_jobs=2"] if launcher == "joblib" else [])


def run_cli(argv: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kw)


@contextlib.contextmanager
def started(argv: list[str], **kw):
    """A process in its own group, killed with that group if the test leaves early."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)


def runs_of(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


def parents_and_children(uri: str, experiment: str) -> tuple[list, list]:
    runs = runs_of(uri, experiment)
    return ([r for r in runs if "mlflow.parentRunId" not in r.data.tags],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])


def curves(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in CURVES}


def assert_every_point_once(client: MlflowClient, run_id: str, epochs: int) -> None:
    """Each curve has one point per epoch: none lost, none duplicated."""
    for key, points in curves(client, run_id).items():
        assert [step for step, _ in points] == list(range(1, epochs + 1)), (run_id, key)


def assert_one_finished_child_per_config(children: list, configs: int) -> list:
    finished = [k for k in children if k.info.status == "FINISHED"]
    hashes = [k.data.tags["annlab.config_hash"] for k in finished]
    assert len(finished) == configs and len(set(hashes)) == configs, hashes
    return finished


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (found := condition()):
            return found
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the sweep ended ({proc.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


# --- the server ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """One `mlflow server` over a new PostgreSQL database for this module (its database name in
    ``server.database``); tests keep apart by experiment name."""
    database = f"scaleout_{uuid.uuid4().hex[:8]}"
    srv = MlflowServer(postgres.create_database(database),
                       tmp_path_factory.mktemp("scaleout-server"))
    srv.database = database
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def live_server(server):
    """The module's server, started again if an earlier test left it stopped."""
    if server.proc is None or server.proc.poll() is not None:
        server.stop()
        server.start()
    return server


@pytest.fixture(scope="module")
def server_run(server, resolved, tmp_path_factory):
    """One run of `make run` through the server, in this process: (its spec, result)."""
    experiment = f"scaleout-run-{uuid.uuid4().hex[:8]}"
    overrides = [*TINY, "train.epochs=12", f"tracking.uri={server.url}",
                 f"tracking.experiment={experiment}"]
    spec = resolved(overrides)
    return spec, run_experiment(spec, overrides, tmp_path_factory.mktemp("scaleout-run"))


def test_a_run_and_a_sweep_log_through_the_server_into_postgresql(
        live_server, server_run, postgres, tmp_path, experiment, global_tracking_uri):
    server = live_server
    spec, result = server_run
    client = MlflowClient(server.url)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == result.run_name
    assert_every_point_once(client, result.run_id, 12)
    assert run.data.metrics["test_accuracy"] == pytest.approx(result.scores["test_accuracy"])
    # Artifacts go through the server (proxied) into its own artifact store.
    figures = {a.path for a in client.list_artifacts(result.run_id, "figures")}
    assert figures == {"figures/misclassification.png", "figures/boundary.gif",
                       "figures/boundary_final.png"}
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    served = {p.name for p in server.artifacts.rglob("*") if result.run_id in p.parts}
    assert {"misclassification.png", "boundary.gif", "boundary_final.png"} <= served
    local = Path(client.download_artifacts(result.run_id, "figures/boundary_final.png",
                                           str(tmp_path)))
    assert local.read_bytes() == result.figures["boundary_final"].read_bytes()
    # The logged model loads from the server and predicts as the run scored.
    with global_tracking_uri(server.url):  # runs:/ resolves through MLflow's global URI
        model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    splits = build_data(spec)
    accuracy = np.mean(np.asarray(model.predict(features(splits.X_test))) == splits.y_test)
    assert accuracy == pytest.approx(result.scores["test_accuracy"])

    # A sweep through the same server: one parent, a FINISHED child per config, every point.
    out = run_cli(sweep_argv(tmp_path / "sweep", server.url, experiment, "train.epochs=10",
                             "model.activation=tanh,relu", "model.hidden_nodes=3",
                             "train.learning_rate=0.5"))
    assert out.returncode == 0, out.stderr
    (parent,), children = parents_and_children(server.url, experiment)
    assert parent.info.status == "FINISHED" and len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert_every_point_once(client, child.info.run_id, 10)
    assert parent.data.metrics["val_misclassification"] == min(
        c.data.metrics["val_misclassification"] for c in children)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "figures")} == {
        "figures/val_misclassification_heatmaps.png", "figures/val_curves.png",
        "figures/boundaries.png"}

    # The rows are PostgreSQL's: runs, nesting tags and every metric point.
    ids = [parent.info.run_id, *(c.info.run_id for c in children)]
    with postgres.connect(server.database) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM runs r JOIN experiments e ON r.experiment_id = "
            "e.experiment_id WHERE e.name = %s AND r.status = 'FINISHED'",
            (experiment,)).fetchone()
        assert count == 3
        nested = conn.execute("SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId' "
                              "AND value = %s", (parent.info.run_id,)).fetchall()
        assert sorted(r for (r,) in nested) == sorted(ids[1:])
        points = conn.execute(
            "SELECT run_uuid, key, count(*), count(DISTINCT step) FROM metrics "
            "WHERE run_uuid = ANY(%s) AND key = ANY(%s) GROUP BY run_uuid, key",
            (ids + [result.run_id], list(CURVES))).fetchall()
    expected = {(i, key, n, n) for i, n in [(result.run_id, 12), *((c, 10) for c in ids[1:])]
                for key in CURVES}
    expected.add((parent.info.run_id, "val_misclassification", 1, 1))  # its best child's
    assert set(points) == expected
    assert_loopback_only(server.pids() | postgres.pids())


def test_reproduce_and_ui_work_against_the_server(live_server, server_run):
    server = live_server
    spec, result = server_run
    out = run_cli([sys.executable, "-m", "pipelines.reproduce", result.run_id, "--uri", server.url])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "identical" in out.stdout
    client = MlflowClient(server.url)
    (verdict,) = client.search_runs(
        [result.experiment_id], f"tags.`annlab.reproduces` = '{result.run_id}'")
    assert verdict.info.status == "FINISHED" and verdict.info.run_id in out.stdout

    # `make ui` over a server: the server's own link, and no UI of its own (it returns).
    out = run_cli([sys.executable, "-m", "pipelines.ui", "--experiment", spec.tracking.experiment],
                  timeout=60, env={**os.environ, "MLFLOW_TRACKING_URI": server.url})
    assert out.returncode == 0, out.stderr
    link = (f"{server.url}/#/experiments/{result.experiment_id}/runs"
            "?workflowType=machine_learning&viewStateShareKey=annlab-runs")
    assert out.stdout.strip() == f"the store is a tracking server; open {link}"




def test_a_run_is_registered_and_served_through_the_server(live_server, server_run,
                                                           postgres):
    from tests.e2e.test_serving import post, serve, stop

    server = live_server
    spec, result = server_run
    out = run_cli([sys.executable, "-m", "pipelines.register", result.run_id, "--uri",
                   server.url])
    assert out.returncode == 0, out.stderr
    name = f"{spec.tracking.experiment}-moons"
    assert out.stdout.startswith(f"registered {name} version 1 ")
    champion = MlflowClient(server.url).get_model_version_by_alias(name, "champion")
    assert champion.run_id == result.run_id
    with postgres.connect(server.database) as conn:  # the registry is the server's
        (count,) = conn.execute("SELECT count(*) FROM model_versions WHERE name = %s",
                                (name,)).fetchone()
    assert count == 1
    proc, base, _ = serve(server.url, "--model", name)
    try:
        X = build_data(spec).X_test[:4]
        answer = post(base, {"dataframe_split": {"columns": ["x1", "x2"], "data": X.tolist()}})
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 4
    finally:
        assert stop(proc)[0] == 0


def _close_all(uri: str, run_ids: list[str], barrier) -> None:
    store = tracking.connect(uri)
    for run_id in run_ids:
        barrier.wait(timeout=60)  # both processes close the same run at the same moment
        tracking.Run(store, run_id).end("KILLED", "its process is gone")


def test_two_processes_closing_the_same_runs_at_once_both_succeed(live_server, experiment):
    """After a lost node, jobs on other nodes find the same abandoned runs and close them
    together: closing must be idempotent, not fail an unrelated config."""
    import multiprocessing

    client = MlflowClient(live_server.url)
    experiment_id = tracking.open(live_server.url, experiment).id
    run_ids = [client.create_run(experiment_id).info.run_id for _ in range(20)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_close_all, args=(live_server.url, run_ids, barrier))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert run.data.tags["annlab.failure"] == "its process is gone"


def test_eight_concurrent_runs_lose_and_repeat_no_point(live_server, tmp_path, experiment):
    """Eight processes run and track a config each at the same time (forked once the imports
    are done, so that they overlap); the experiment does not exist yet, so they also race to
    create it."""
    import json

    server, epochs = live_server, 40
    with started([sys.executable, str(REPO / "tests" / "scripts" / "concurrent_runs.py"),
                  str(REPO / "conf"), str(tmp_path), "8",
                  *TINY, f"train.epochs={epochs}", f"tracking.uri={server.url}",
                  f"tracking.experiment={experiment}"],  # forks share its group
                 env={**os.environ, "PYTHONPATH": str(REPO)}) as proc:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    reported = {r["run_id"]: r["seed"] for r in map(json.loads, re.findall(
        r"^\{.*\}$", out, re.MULTILINE))}
    runs = runs_of(server.url, experiment)
    assert len(reported) == 8 and {r.info.run_id for r in runs} == set(reported)
    client = MlflowClient(server.url)
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.params["seed"] == str(reported[r.info.run_id])
        assert_every_point_once(client, r.info.run_id, epochs)


def children_in(server, experiment, status):
    """What wait_for watches: the sweep's children in ``status``."""
    return lambda: [k for k in parents_and_children(server.url, experiment)[1]
                    if k.info.status == status]


def test_a_server_restarted_mid_sweep_loses_and_repeats_no_point(live_server, tmp_path,
                                                                  experiment):
    server, epochs = live_server, 600
    argv = sweep_argv(tmp_path / "sweep", server.url, experiment, *SLOW_JOB,
                      "model.activation=tanh,relu", "model.hidden_nodes=3",
                      "train.learning_rate=0.5")
    with started(argv) as proc:
        (first,) = wait_for(children_in(server, experiment, "RUNNING"), 120,
                            "the first job's run", proc)
        assert proc.poll() is None
        took = server.restart()  # the same port; well within MLflow's ~30 s of retries
        back = time.time() * 1000
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and took < 25
    (parent,), children = parents_and_children(server.url, experiment)
    assert parent.info.status == "FINISHED"
    assert_one_finished_child_per_config(children, 2)
    assert len(children) == 2  # no job ran twice
    client = MlflowClient(server.url)
    for child in children:
        assert_every_point_once(client, child.info.run_id, epochs)
    # The job that was running when the server went away finished after it came back.
    ended = client.get_run(first.info.run_id).info
    assert ended.status == "FINISHED" and ended.end_time > back


def test_jobs_starting_while_the_server_restarts_wait_for_it(live_server, tmp_path,
                                                              experiment):
    """A job's first look at the server honours the retry window MLflow's client gives every
    call: the jobs that start while the server is down wait for it, and none fails."""
    server, epochs = live_server, 600
    argv = sweep_argv(tmp_path / "sweep", server.url, experiment, *SLOW_JOB,
                      "model.activation=tanh,relu,sigmoid", "model.hidden_nodes=3",
                      "train.learning_rate=0.5")
    with started(argv) as proc:
        wait_for(children_in(server, experiment, "FINISHED"), 120, "the first job's end", proc)
        took = server.restart()  # the next job starts meanwhile
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "FAILED" not in out, (took, out, err)
    (parent,), children = parents_and_children(server.url, experiment)
    assert parent.info.status == "FINISHED"
    assert_one_finished_child_per_config(children, 3) and len(children) == 3
    client = MlflowClient(server.url)
    for child in children:
        assert_every_point_once(client, child.info.run_id, epochs)


# MLflow's retries bounded to a few seconds (settings the user exports win over annlab's ~30 s),
# so that a server that stays away fails the sweep quickly here; the paths are the same.
SHORT_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def test_a_server_that_stays_away_fails_the_sweep_and_a_rerun_completes_it(
        live_server, tmp_path, experiment):
    server, epochs = live_server, 600
    argv = sweep_argv(tmp_path / "sweep", server.url, experiment, *SLOW_JOB,
                      "model.activation=tanh,relu,sigmoid", "model.hidden_nodes=3",
                      "train.learning_rate=0.5")
    env = {**os.environ, **SHORT_RETRIES}

    def one_done_one_running():
        children = parents_and_children(server.url, experiment)[1]
        status = [k.info.status for k in children]
        return "FINISHED" in status and "RUNNING" in status and children

    with started(argv, env=env) as proc:
        children = wait_for(one_done_one_running, 120, "one job done and one running", proc)
        server.stop()
        gone = time.monotonic()
        out, err = proc.communicate(timeout=300)
        took = time.monotonic() - gone
    (done,) = [k.info.run_id for k in children if k.info.status == "FINISHED"]
    (stuck,) = [k.info.run_id for k in children if k.info.status == "RUNNING"]
    assert proc.returncode not in (0, None) and took < 60, (took, err)
    # The job that was running and every later one fail, each naming the server.
    failed = [line for line in out.splitlines() if re.match(r"\S+ FAILED ", line)]
    assert len(failed) == 2 and all(server.url in line for line in failed), out
    assert f"tracking server {server.url} is unreachable" in failed[-1]
    traceback = "Traceback" in err

    server.start()
    rerun = run_cli(argv, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("already done") == 1 and "resuming sweep" in rerun.stdout
    (parent,), children = parents_and_children(server.url, experiment)
    assert parent.info.status == "FINISHED"
    finished = assert_one_finished_child_per_config(children, 3)
    assert done in {k.info.run_id for k in finished}  # kept, not run again
    status = {k.info.run_id: k.info.status for k in children}
    assert status[stuck] in ("KILLED", "FAILED") and len(children) == 4
    client = MlflowClient(server.url)
    for child in finished:
        assert_every_point_once(client, child.info.run_id, epochs)
    assert not traceback, "a sweep whose server stays away must end in one line"


# --- Ray ---------------------------------------------------------------------------------

@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_a_ray_cluster_that_is_not_there_is_refused_in_one_line_before_any_run(tmp_path,
                                                                               store):
    # With a store only this machine sees, an address on another machine is refused before
    # connecting; with a server store, an address where nothing answers within seconds.
    address = "ray-head.invalid:6379" if store == "sqlite" else f"127.0.0.1:{free_port()}"
    uri = (f"sqlite:///{tmp_path / 'mlflow.db'}" if store == "sqlite" else
           "http://10.0.0.5:5001")  # never reached: the cluster is refused first
    started = time.monotonic()
    out = run_cli(sweep_argv(tmp_path / "sweep", uri, "annlab", "train.epochs=8",
                             launcher="annlab_ray"),
                  env={**os.environ, "RAY_ADDRESS": address}, timeout=120)
    assert out.returncode == 1 and time.monotonic() - started < 15
    (line,) = out.stderr.strip().splitlines()
    assert address in line and line.startswith("error: ")
    assert ("on another machine" if store == "sqlite" else "no Ray cluster answers") in line
    assert not (tmp_path / "mlflow.db").exists()  # nothing created


RAY_GRID = ["train.epochs=8", "model.activation=tanh,relu", "model.hidden_nodes=3",
            "train.learning_rate=0.1,0.5"]


def nodes_running(cluster, uri: str, seen: dict[str, int]) -> None:
    """Note, in ``seen`` (run name -> node index), which node's processes run each job now
    running (each run names its writer's pid in annlab.process)."""
    members = [descendants([group], [group]) for group in cluster.groups]
    for kid in parents_and_children(uri, "annlab")[1]:
        if kid.info.status == "RUNNING" and "annlab.process" in kid.data.tags:
            pid = int(kid.data.tags["annlab.process"].split()[2])
            for k, pids in enumerate(members):
                if pid in pids:
                    seen.setdefault(kid.info.run_name, k)


def test_a_ray_sweep_on_two_nodes_nests_and_matches_joblib_bitwise(
        ray_cluster, loopback_netns, tmp_path):
    uris = {launcher: f"sqlite:///{tmp_path / launcher}.db" for launcher in ("ray", "joblib")}
    argv = {launcher: sweep_argv(tmp_path / f"sweep-{launcher}", uri, "annlab", *RAY_GRID,
                                 launcher="annlab_ray" if launcher == "ray" else launcher)
            for launcher, uri in uris.items()}
    # Side by side: the Ray driver joins the cluster inside its namespace.
    ran: dict[str, int] = {}
    with started(loopback_netns.cmd(argv["ray"]), env=ray_cluster.driver_env()) as ray_proc, \
            started(argv["joblib"]) as joblib_proc:
        tracking.connect(uris["ray"])  # created whole before it is polled
        while ray_proc.poll() is None:
            with contextlib.suppress(Exception):  # the store is being created
                nodes_running(ray_cluster, uris["ray"], ran)
            time.sleep(0.1)
        outs = {"ray": ray_proc.communicate(timeout=300),
                "joblib": joblib_proc.communicate(timeout=300)}
    assert (ray_proc.returncode, joblib_proc.returncode) == (0, 0), outs
    found = {}
    for launcher, uri in uris.items():
        (parent,), children = parents_and_children(uri, "annlab")
        assert parent.info.status == "FINISHED" and len(children) == 4
        for child in children:
            assert child.info.status == "FINISHED"
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        client = MlflowClient(uri)
        found[launcher] = {child.info.run_name: curves(client, child.info.run_id)
                           for child in children}
    assert all(len(points) == 8 for run in found["joblib"].values() for points in run.values())
    assert found["ray"] == found["joblib"]  # float equality: bitwise
    # Both nodes ran jobs, each job once.
    assert set(ran.values()) == {0, 1} and sorted(ran) == sorted(found["ray"]), ran
    assert_loopback_only(ray_cluster.pids(), loopback_netns)
    # Progress comes from the launching process: one line per job, in order, none of Ray's.
    lines = [line for line in outs["ray"][0].splitlines() if re.match(r"\[\d/4\] ", line)]
    assert [line[:5] for line in lines] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"], outs["ray"]
    assert "pid=" not in outs["ray"][0] + outs["ray"][1], outs["ray"]


def test_a_lost_ray_node_leaves_no_run_running_and_a_rerun_runs_nothing_again(
        ray_cluster, loopback_netns, tmp_path):
    """A job's node dies mid-sweep (its raylet and workers killed): Ray runs the job again on
    the other node. Last in this module: the cluster keeps only its head afterwards."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.connect(uri)  # created whole before this test's client polls it
    epochs, worker = 600, ray_cluster.groups[1]
    argv = loopback_netns.cmd(sweep_argv(
        tmp_path / "sweep", uri, "annlab", *SLOW_JOB, "model.activation=tanh,relu,sigmoid",
        "model.hidden_nodes=3", "train.learning_rate=0.5", launcher="annlab_ray"))

    def running_on_the_worker():
        node = descendants([worker], [worker])
        return [k for k in parents_and_children(uri, "annlab")[1]
                if k.info.status == "RUNNING"
                and int(k.data.tags["annlab.process"].split()[2]) in node]

    with started(argv, env=ray_cluster.driver_env()) as proc:
        (victim,) = wait_for(running_on_the_worker, 180, "a job on the worker node", proc)
        lost = descendants([worker], [worker])
        kill_pids(lost, signal.SIGKILL)  # the node is lost: raylet, workers and all
        out, err = proc.communicate(timeout=300)
    assert not descendants(lost)
    (parent,), children = parents_and_children(uri, "annlab")
    assert all(r.info.status != "RUNNING" for r in [parent, *children])
    # Ray ran the lost job again on the head; its first run was closed, not left RUNNING.
    assert proc.returncode == 0, err
    assert f"sweep parent run {parent.info.run_name}" in out
    status = {k.info.run_id: k.info.status for k in children}
    assert status[victim.info.run_id] in ("KILLED", "FAILED") and len(children) == 4
    assert parent.info.status == "FINISHED"
    finished = assert_one_finished_child_per_config(children, 3)
    (retried,) = [k for k in finished if k.data.tags["annlab.config_hash"]
                  == victim.data.tags["annlab.config_hash"]]
    assert int(retried.data.tags["annlab.process"].split()[2]) not in lost
    client = MlflowClient(uri)
    for child in finished:
        assert_every_point_once(client, child.info.run_id, epochs)

    rerun = run_cli(argv, env=ray_cluster.driver_env())
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming sweep" in rerun.stdout
    (again,), after = parents_and_children(uri, "annlab")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert {k.info.run_id: k.info.status for k in after} == status  # nothing ran again


def test_two_people_starting_one_study_at_once_on_new_databases_share_it(live_server, postgres,
                                                                         tmp_path, experiment):
    """Two `make tune` at the same moment against the shared server, a new experiment and a new
    PostgreSQL study storage: every first write races (the experiment and its views, Optuna's
    tables, the study, its parent, the registration at the end)."""
    import optuna

    storage = postgres.create_database(f"study_{uuid.uuid4().hex[:8]}")
    argv = [sys.executable, "-m", "pipelines.run", "tune=default", *TINY, "train.epochs=60",
            "hydra/launcher=basic", f"tracking.uri={live_server.url}",
            f"tracking.experiment={experiment}", "tune.study=lab", f"tune.storage={storage}",
            "tune.n_trials=6"]
    procs = [subprocess.Popen([*argv, f"hydra.sweep.dir={tmp_path / str(k)}"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:  # timed out: not left writing to the shared server
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert [err for _, err in outs] == ["", ""]  # quiet: no library's lines, no traceback
    (parent,), children = parents_and_children(live_server.url, experiment)
    assert parent.info.status == "FINISHED" and len(children) == 6
    assert all(c.info.status == "FINISHED" for c in children)
    trials = optuna.load_study(study_name="lab", storage=storage).trials
    assert sorted(int(c.data.tags["annlab.trial"]) for c in children) == \
        sorted(t.number for t in trials) == list(range(6))
    client = MlflowClient(live_server.url)
    (version,) = client.search_model_versions(f"name = '{experiment}-moons'")
    champion = client.get_model_version_by_alias(f"{experiment}-moons", "champion")
    assert str(champion.version) == str(version.version)
    assert version.run_id == parent.data.tags["annlab.best_run"]
