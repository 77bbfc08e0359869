"""`make tune`: the search space and its checks, pruning from the curves, resume, shared studies.

Studies run the real CLI (`python -m pipelines.run tune=default ...`) on tiny configs, each into
its own MLflow store and Optuna database.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow.artifacts
import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf

from annlab import tracking, tune
from annlab.config import ConfigError
from pipelines.tune import check_space

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=60", "plot.frames=3", "plot.image_steps=2", "plot.grid_size=12",
        "plot.dpi=30", "data.n_samples=160", "tune.report_every=5",
        "tune.pruner.warmup_epochs=10", "tune.pruner.startup_trials=2"]


# -- the search space and its checks ---------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("tune.n_trials=0", "tune.n_trials"),
    ("tune.sampler=grid", "tune.sampler"),
    ("tune.pruner.name=hyperband", "tune.pruner.name"),
    ("tune.report_every=0", "tune.report_every"),
    ("tune.space.train.learning_rate.low=20", "tune.space.train.learning_rate.low/high"),
    ("tune.space.model.hidden_nodes.high=2", "tune.space.model.hidden_nodes.low/high"),
    ("tune.space.train.reg_lambda.low=0", "tune.space.train.reg_lambda.low"),
    ("tune.space.model.activation.choices=[]", "tune.space.model.activation.choices"),
])
def test_a_bad_search_setting_names_its_key_and_what_is_allowed(compose_cfg, override, key):
    cfg = compose_cfg(["tune=default", override])
    with pytest.raises(ConfigError) as info:
        tune.validate(cfg.tune)
    assert info.value.key == key and "allowed:" in str(info.value)


@pytest.mark.parametrize("override, key", [
    ("+tune.space.train.learing_rate={type:float,low:0.1,high:1}",
     "tune.space.train.learing_rate"),
    ("+tune.space.seed={type:int,low:-1,high:3}", "tune.space.seed"),
    ("tune.space.model.activation.choices=[tanh,softmax]", "tune.space.model.activation"),
    ("tune.space.model.hidden_nodes.low=0", "tune.space.model.hidden_nodes"),
])
def test_a_space_the_config_cannot_take_is_refused(compose_cfg, override, key):
    cfg = compose_cfg(["tune=default", override])
    tune.validate(cfg.tune)
    with pytest.raises(ConfigError) as info:
        check_space(cfg)
    assert info.value.key == key


def test_the_study_never_shares_mlflows_database(compose_cfg):
    cfg = compose_cfg(["tune=default", "tune.storage=sqlite:////tmp/x/mlflow.db"])
    with pytest.raises(ConfigError, match="not MLflow's"):
        tune.storage_url(cfg.tune, "unused", "sqlite:////tmp/x/mlflow.db")
    assert tune.storage_url(cfg.tune, "unused", "sqlite:////tmp/y.db") == \
        "sqlite:////tmp/x/mlflow.db"


def test_suggestions_follow_the_space_and_the_same_seed_proposes_the_same_configs(
        compose_cfg, tmp_path):
    cfg = compose_cfg(["tune=default", "tune.seed=7", "tune.study=s"])

    def proposals(db):
        study, created = tune.open_study(cfg.tune, f"sqlite:///{tmp_path / db}")
        assert created
        tune.sampler_and_pruner(cfg.tune, study)
        out = []
        for _ in range(12):  # past TPE's 10 random start-up trials
            trial = study.ask()
            values = tune.suggest(trial, cfg.tune)
            study.tell(trial, values["train.learning_rate"])  # any objective will do
            out.append(values)
        return out

    first, second = proposals("a.db"), proposals("b.db")
    assert first == second
    for values in first:
        assert values["model.activation"] in ("tanh", "sigmoid", "relu")
        assert 2 <= values["model.hidden_nodes"] <= 16
        assert 0.01 <= values["train.learning_rate"] <= 10.0
        assert 1e-4 <= values["train.reg_lambda"] <= 1.0


def test_workers_joining_a_study_do_not_propose_the_creators_configs(compose_cfg, tmp_path):
    """Two workers started together both find an empty study: the same seed would have them
    ask the same values trial for trial."""
    cfg = compose_cfg(["tune=default", "tune.study=s"])

    def first_values(created):
        study, _ = tune.open_study(cfg.tune, f"sqlite:///{tmp_path / f'{created}.db'}")
        tune.sampler_and_pruner(cfg.tune, study, created)
        return [tune.suggest(study.ask(), cfg.tune) for _ in range(3)]

    assert first_values(True) != first_values(False)


def test_surplus_trials_of_a_shared_study_are_not_run(compose_cfg, tmp_path):
    cfg = compose_cfg(["tune=default", "tune.study=s"])
    study, _ = tune.open_study(cfg.tune, f"sqlite:///{tmp_path / 'o.db'}")
    trials = [study.ask() for _ in range(5)]  # five workers ask at once for a budget of 3
    claimed = [tune.claim(study, t, 3) for t in trials]
    assert claimed == [True, True, True, False, False]
    states = [t.state for t in study.get_trials()]
    assert states[3:] == [optuna.trial.TrialState.FAIL] * 2
    assert tune.remaining(study, 3) == 0


# -- studies, end to end ---------------------------------------------------------------------

def _tune(tmp_path, *overrides, popen=False, name="s"):
    args = [sys.executable, "-m", "pipelines.run", "tune=default", *TINY,
            "hydra/launcher=basic", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"paths.study_store=sqlite:///{tmp_path / 'optuna.db'}", f"tune.study={name}",
            f"hydra.sweep.dir={tmp_path / 'sweeps' / str(time.monotonic_ns())}", *overrides]
    kw = {"cwd": REPO, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
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


@pytest.mark.slow
def test_a_study_prunes_from_the_curves_and_records_every_trial(tmp_path):
    out = _tune(tmp_path, "tune.n_trials=8", "tune.seed=3")
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
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    files |= {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"trials.csv", "figures/optimization_history.png",
            "figures/parallel_coordinate.png", "figures/param_importances.png"} <= files
    best = min((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert parent.data.metrics["best_val_misclassification"] == pytest.approx(best.value)
    (best_run,) = [t for t in trials if t.data.tags["annlab.trial"] == str(best.number)]
    assert parent.data.tags["annlab.best_run"] == best_run.info.run_id
    again = _tune(tmp_path, "tune.n_trials=8", "tune.seed=3")  # complete: runs nothing more
    assert again.returncode == 0 and len(_runs(tmp_path)[2]) == 8


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_study_resumes_after_sigterm_without_counting_a_trial_twice(tmp_path, sigterm_when):
    proc = _tune(tmp_path, "tune.n_trials=4", "train.epochs=2000", "tune.pruner.name=median",
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

    out = _tune(tmp_path, "tune.n_trials=4", "train.epochs=2000", "tune.pruner.name=median",
                "tune.pruner.startup_trials=100")
    assert out.returncode == 0, out.stderr
    states = [t.state.name for t in _study(tmp_path).trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 4
    _, (parent,), trials = _runs(tmp_path)
    assert parent.info.status == "FINISHED"
    finished = [t for t in trials if t.info.status == "FINISHED"]
    assert len(finished) == 4
    (rerun,) = [t for t in _study(tmp_path).trials if t.number == waiting.number]
    assert rerun.state.name == "COMPLETE" and rerun.params == failed.params  # run, once
    assert str(rerun.number) in {t.data.tags["annlab.trial"] for t in finished}


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_bad_input_is_one_line_and_creates_nothing(tmp_path):
    out = _tune(tmp_path, "tune.n_trials=0")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: invalid config: tune.n_trials=0; allowed: an integer >= 1"]
    assert not (tmp_path / "optuna.db").exists()
    assert _runs(tmp_path)[1:] == ([], [])


def test_conf_tune_default_is_a_valid_study(compose_cfg):
    cfg = compose_cfg(["tune=default"])
    tune.validate(cfg.tune)
    check_space(cfg)
    assert OmegaConf.select(cfg, "tune.space.model.activation.type") == "categorical"
    assert os.path.basename(cfg.paths.study_store) == "optuna.db"


def test_a_study_with_nothing_left_to_ask_waits_for_its_warm_workers(tmp_path):
    # A finished study run again asks nothing, writes its summary and stops, while its joblib
    # workers may still be forking from a fork server that is late here (6 s, on purpose):
    # a worker forked after the process exited would print tracebacks.
    def study(*extra, env=None):
        return subprocess.run(
            [sys.executable, "-m", "pipelines.run", "tune=default", *TINY, "tune.n_trials=2",
             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
             f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
             f"paths.study_store=sqlite:///{tmp_path / 'optuna.db'}",
             f"hydra.sweep.dir={tmp_path / 'sweeps' / str(time.monotonic_ns())}", *extra],
            cwd=REPO, capture_output=True, text=True, timeout=300, env=env)

    assert study().returncode == 0
    path = os.pathsep.join([str(REPO / "tests" / "scripts" / "slow_forkserver"),
                            os.environ.get("PYTHONPATH", "")])
    again = study(env={**os.environ, "PYTHONPATH": path, "ANNLAB_TEST_FORKSERVER_DELAY": "6"})
    assert again.returncode == 0, again.stderr
    assert "0 to ask" in again.stdout and again.stderr == "", again.stderr
