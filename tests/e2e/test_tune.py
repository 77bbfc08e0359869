"""`make tune`: the search space and its checks, pruning from the curves, resume, shared studies,
the same study from the same seed, and a trial's two records in agreement after any interrupt.

Studies run the real CLI (`python -m pipelines.run tune=default ...`) on tiny configs, each into
its own MLflow store and Optuna database.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow.artifacts
import optuna
import pandas as pd
import pytest

from annlab import study as tune
from annlab import tracking

REPO = Path(__file__).resolve().parents[2]
TINY = ["train.epochs=60", "plot.frames=3", "plot.image_steps=2", "plot.grid_size=12",
        "plot.dpi=30", "data.n_samples=160", "tune.report_every=5",
        "tune.pruner.warmup_epochs=10", "tune.pruner.startup_trials=2"]


# -- studies, end to end ---------------------------------------------------------------------

def _tune(tmp_path, *overrides, popen=False, name="s", launcher="basic"):
    args = [sys.executable, "-m", "pipelines.run", "tune=default", *TINY,
            f"hydra/launcher={launcher}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"tune.study={name}",
            f"hydra.sweep.dir={tmp_path / 'sweeps' / str(time.monotonic_ns())}", *overrides]
    # Its own process group, as a terminal's command: Ctrl-C reaches the jobs' workers too.
    kw = {"cwd": REPO, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True,
          "start_new_session": popen}
    return subprocess.Popen(args, **kw) if popen else subprocess.run(args, timeout=900, **kw)


def _runs(tmp_path):
    # Through annlab, which creates a missing store whole: this polls while a study starts,
    # and a raw MLflow client would build the schema in place, racing the study's own creation.
    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}").client
    exp = client.get_experiment_by_name("annlab")
    runs = [] if exp is None else client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "annlab.study" in r.data.tags
               and "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "annlab.trial" in r.data.tags]
    return client, parents, trials


def _study(tmp_path, name="s"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def test_a_study_prunes_from_the_curves_and_records_every_trial(tmp_path):
    out = _tune(tmp_path, "tune.n_trials=8", "tune.seed=4", "tune.pruner.name=median")
    assert out.returncode == 0, out.stderr
    client, (parent,), trials = _runs(tmp_path)
    assert len(trials) == 8 and parent.info.status == "FINISHED"
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    assert sorted(int(t.data.tags["annlab.trial"]) for t in trials) == list(range(8))
    assert all(t.info.status == "FINISHED" for t in trials)  # pruning is no failure
    pruned = [t for t in trials if "annlab.pruned_at" in t.data.tags]
    assert pruned, "the study pruned nothing"
    study = _study(tmp_path)
    states = {t.number: t.state.name for t in study.trials}
    for run in pruned:
        epoch = int(run.data.tags["annlab.pruned_at"])
        assert states[int(run.data.tags["annlab.trial"])] == "PRUNED"
        assert 10 <= epoch < 60 and epoch % 5 == 0
        for key in ("train_loss", "val_misclassification"):  # the curves stop there
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert steps == list(range(1, epoch + 1))
        assert f"after {epoch} epochs" in run.data.tags["mlflow.note.content"]
        assert run.info.run_name.startswith(f"pruned@{epoch}-trial-")  # said in its name
    for run in trials:  # each trial points to its run, and its name shows what it sampled
        (trial,) = [t for t in study.trials if t.number == int(run.data.tags["annlab.trial"])]
        assert trial.user_attrs["annlab.mlflow_run_id"] == run.info.run_id
        assert f"-reg{float(trial.params['train.reg_lambda']):.3g}" in run.info.run_name
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    files |= {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"trials.csv", "figures/optimization_history.png", "figures/best_so_far.png",
            "figures/intermediate_values.png", "figures/parallel_coordinate.png",
            "figures/param_importances.png"} <= files
    lines = [line for line in out.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == [f"[{k}/8" for k in range(1, 9)]
    best = min((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert parent.data.metrics["val_misclassification"] == pytest.approx(best.value)
    (best_run,) = [t for t in trials if t.data.tags["annlab.trial"] == str(best.number)]
    assert parent.data.tags["annlab.best_run"] == best_run.info.run_id
    again = _tune(tmp_path, "tune.n_trials=8", "tune.seed=3")  # complete: runs nothing more
    assert again.returncode == 0 and len(_runs(tmp_path)[2]) == 8


def test_a_pruned_trial_reproduces(tmp_path):
    out = _tune(tmp_path, "tune.n_trials=6", "tune.seed=3")
    assert out.returncode == 0, out.stderr
    _, _, trials = _runs(tmp_path)
    run = next((t for t in trials if "annlab.pruned_at" in t.data.tags), trials[0])
    check = subprocess.run([sys.executable, "-m", "pipelines.reproduce", run.info.run_id,
                            "--uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "identical:" in check.stdout


def test_a_study_resumes_after_sigterm_without_counting_a_trial_twice(tmp_path, sigterm_when):
    proc = _tune(tmp_path, "tune.n_trials=3", "train.epochs=2000", "tune.pruner.name=median",
                 "tune.pruner.startup_trials=100", popen=True)  # nothing pruned: slow trials
    stderr = sigterm_when(proc, lambda: len(_runs(tmp_path)[2]) >= 2, timeout=240)[1]
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    _, parents, trials = _runs(tmp_path)
    assert all(r.info.status != "RUNNING" for r in parents + trials)
    interrupted = [t for t in trials if t.info.status == "KILLED"]
    assert len(interrupted) == 1
    study = _study(tmp_path)
    (failed,) = [t for t in study.trials if t.state.name == "FAIL"]
    (waiting,) = [t for t in study.trials if t.state.name == "WAITING"]  # asked again...
    assert waiting.params == failed.params  # ... with the same values

    out = _tune(tmp_path, "tune.n_trials=3", "train.epochs=2000", "tune.pruner.name=median",
                "tune.pruner.startup_trials=100")
    assert out.returncode == 0, out.stderr
    states = [t.state.name for t in _study(tmp_path).trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 3
    _, (parent,), trials = _runs(tmp_path)
    assert parent.info.status == "FINISHED"
    finished = [t for t in trials if t.info.status == "FINISHED"]
    assert len(finished) == 3
    (rerun,) = [t for t in _study(tmp_path).trials if t.number == waiting.number]
    assert rerun.state.name == "COMPLETE" and rerun.params == failed.params  # run, once
    assert str(rerun.number) in {t.data.tags["annlab.trial"] for t in finished}


def _outcome(tmp_path):
    """What a rerun with the same seed must give again: each trial's values, state, value and
    pruned epoch, and the best."""
    study = _study(tmp_path)
    trials = [(t.number, sorted(t.params.items()), t.state.name, t.value,
               max(t.intermediate_values) if t.state.name == "PRUNED" else None)
              for t in study.trials]
    return trials, study.best_trial.number


def test_the_same_seed_gives_the_same_study_into_fresh_stores(tmp_path):
    """Two workers (joblib, as `make tune` runs), pruning by successive halving (the pruner
    that compares trials): whichever worker is faster, the same trials, decisions and best."""
    args = ["tune.n_trials=6", "tune.seed=2", "tune.pruner.name=successive_halving",
            "hydra.launcher.n_jobs=2"]
    outcomes = []
    for store in (tmp_path / "a", tmp_path / "b"):
        out = _tune(store, *args, launcher="joblib")
        assert out.returncode == 0, out.stderr
        outcomes.append(_outcome(store))
        _, (parent,), trials = _runs(store)
        best = [r for r in trials if r.info.run_id == parent.data.tags["annlab.best_run"]]
        assert int(best[0].data.tags["annlab.trial"]) == outcomes[-1][1]
    assert outcomes[0] == outcomes[1]
    trials, _ = outcomes[0]
    states = [state for _, _, state, _, _ in trials]
    assert len(trials) == 6 and set(states) == {"COMPLETE", "PRUNED"}  # decisions compared
    assert [t.user_attrs[tune.BATCH_ATTR] for t in _study(tmp_path / "a").trials] == \
        [0, 0, 1, 1, 2, 2]


def _two_records(tmp_path):
    """Each trial's Optuna state and its MLflow run's status, which must agree: a trial
    COMPLETE or PRUNED has one FINISHED run; a FAIL one a KILLED or FAILED run, or none (its
    job never started); nothing is left RUNNING. Returns the trials' states."""
    _, parents, runs = _runs(tmp_path)
    by_trial = {}
    for run in runs:
        by_trial.setdefault(int(run.data.tags["annlab.trial"]), []).append(run.info.status)
    states = {t.number: t.state.name for t in _study(tmp_path).trials}
    for number, statuses in by_trial.items():
        assert len(statuses) == 1, (number, statuses)  # a trial runs once
    agree = {"COMPLETE": {"FINISHED"}, "PRUNED": {"FINISHED"}, "FAIL": {"KILLED", "FAILED", None},
             "WAITING": {None}}
    for number, state in states.items():
        (status,) = by_trial.get(number, [None])
        assert status in agree[state], (number, state, status, states, by_trial)
    assert all(p.info.status != "RUNNING" for p in parents)
    return states


def _seed_with_a_short_and_a_long_first_trial(resolved, space) -> int:
    """A study seed whose first batch trains one short and one long trial (the same values
    in process as in the CLI: that is what a seed means)."""
    for seed in range(100):
        t = resolved(["tune=default", "tune.pruner.name=none", f"tune.seed={seed}",
                      space]).tune
        asked = []
        tune.ask_batch(optuna.create_study(direction="minimize"), t, 2, "x", asked)
        if sorted(v["train.epochs"] for _, v in asked) == [30, 5000]:
            return seed
    raise AssertionError("no seed found")


@pytest.mark.parametrize("moment", ["asking", "training", "telling"])
def test_an_interrupted_study_keeps_each_trials_two_records_in_agreement(tmp_path, resolved,
                                                                          moment):
    """Ctrl-C (SIGINT to the process group, joblib's workers included) while the study asks a
    batch (a trial in the study, its job not started), while one trial of the batch has
    finished and the other trains (issue 29: the finished one was failed, then ran again), or
    while the study tells a batch whose runs have all ended. Then a rerun: every trial's run
    and Optuna trial agree, the study counts exactly n_trials, and no trial runs twice."""
    space = "+tune.space.train.epochs={type:categorical,choices:[30,5000]}"
    seed = _seed_with_a_short_and_a_long_first_trial(resolved, space)
    args = ["tune.n_trials=3", f"tune.seed={seed}", "tune.pruner.name=none", space,
            "tune.report_every=1000", "hydra.launcher.n_jobs=2"]

    def now() -> bool:
        _, parents, trial_runs = _runs(tmp_path)
        if not parents:  # the study's database is not made yet: opening it would race
            return False
        trials = {t.number: t.state.name for t in _study(tmp_path).trials}
        runs = {int(r.data.tags["annlab.trial"]): r.info.status for r in trial_runs}
        if moment == "asking":
            return any(s == "RUNNING" and n not in runs for n, s in trials.items())
        if moment == "training":
            return sorted(runs.values()) == ["FINISHED", "RUNNING"]
        return len(runs) == 2 and set(runs.values()) == {"FINISHED"} and \
            "RUNNING" in trials.values()

    proc = _tune(tmp_path, *args, popen=True, launcher="joblib")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if now():
                    break
            except Exception:  # the stores are being created
                pass
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode in (0, 130) and "Traceback" not in stderr, stderr
    _two_records(tmp_path)

    out = _tune(tmp_path, *args, launcher="joblib")
    assert out.returncode == 0, out.stderr
    states = list(_two_records(tmp_path).values())
    assert states.count("COMPLETE") + states.count("PRUNED") == 3
    _, (parent,), runs = _runs(tmp_path)
    assert parent.info.status == "FINISHED"
    assert [r.info.status for r in runs].count("FINISHED") == 3


def test_every_trial_is_a_run_of_its_own_even_when_its_values_repeat(tmp_path):
    """A sweep skips a config it has finished; a study must not: its trials are its samples."""
    point = ["tune.space.model.activation.choices=[tanh]", "~tune.space.model.hidden_nodes",
             "~tune.space.train"]  # one value to sample: every trial the same config
    out = _tune(tmp_path, "tune.n_trials=3", "tune.pruner.name=median",
                "tune.pruner.startup_trials=100", *point)
    assert out.returncode == 0, out.stderr
    _, (parent,), trials = _runs(tmp_path)
    assert sorted(int(t.data.tags["annlab.trial"]) for t in trials) == [0, 1, 2]
    assert len({t.info.run_id for t in trials}) == 3
    assert all(t.info.status == "FINISHED" for t in trials)
    assert len({t.data.tags["annlab.config_hash"] for t in trials}) == 1  # one config, 3 runs
    table = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="trials.csv",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert table["run_id"].notna().all() and set(table["run_id"]) == \
        {t.info.run_id for t in trials}


def test_two_workers_share_one_study_and_run_exactly_n_trials(tmp_path):
    procs = [_tune(tmp_path, "tune.n_trials=7", popen=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    study = _study(tmp_path)
    run = [t for t in study.trials if not t.user_attrs.get(tune.SURPLUS_ATTR)]
    assert len(run) == 7 and sorted(t.number for t in run) == sorted({t.number for t in run})
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in run)
    assert len({tuple(sorted(t.params.items())) for t in run}) == 7  # no worker echoes another
    _, parents, trials = _runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 7
    assert sorted(int(t.data.tags["annlab.trial"]) for t in trials) == \
        sorted(t.number for t in run)


def test_bad_input_is_one_line_and_creates_nothing(tmp_path):
    out = _tune(tmp_path, "tune.n_trials=0")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: invalid config: tune.n_trials=0; allowed: an integer from 1 to 100,000"]
    assert not (tmp_path / "optuna.db").exists()
    assert _runs(tmp_path)[1:] == ([], [])


def test_each_store_keeps_its_own_study_and_a_shared_storage_is_refused(tmp_path):
    """The same `make tune` into two fresh stores: each runs a study of its own, beside its
    store. Pointed at the first store's study, the second is refused naming both stores."""
    first, second = tmp_path / "a", tmp_path / "b"
    for store in (first, second):
        out = _tune(store, "tune.n_trials=2", name="moons")
        assert out.returncode == 0, out.stderr
        assert "starting study 'moons'" in out.stdout and "2 to ask" in out.stdout
        client, (parent,), trials = _runs(store)
        assert len(trials) == 2 and (store / "optuna.db").exists()
        table = pd.read_csv(client.download_artifacts(parent.info.run_id, "trials.csv",
                                                      str(store)))
        assert set(table["run_id"]) == {t.info.run_id for t in trials}  # this store's runs
    out = _tune(second, "tune.n_trials=2", f"tune.storage=sqlite:///{first / 'optuna.db'}",
                name="moons")
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert f"{first / 'mlflow.db'}" in line and f"{second / 'mlflow.db'}" in line
    assert len(_runs(second)[2]) == 2  # nothing more was run or tracked
