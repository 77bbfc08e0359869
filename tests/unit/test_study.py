"""The study and Optuna: where it lives, seeded suggestions, shared budgets, and the two private
attributes annlab.study reads (pinned here). Its settings' checks: tests/unit/test_spec.py."""

import dataclasses

import optuna
import pytest

from annlab import study as tune
from annlab.config import ConfigError


def _tune(resolved, *overrides):
    return resolved(["tune=default", *overrides]).tune

def test_a_study_lives_beside_its_sqlite_store_and_a_server_has_no_default(resolved):
    t = _tune(resolved)
    assert tune.storage_url(t, "sqlite:////tmp/a/b/mlflow.db") == "sqlite:////tmp/a/b/optuna.db"
    for uri in ("http://127.0.0.1:5001", "postgresql+psycopg://me:secret@db:5432/mlflow"):
        with pytest.raises(ConfigError) as info:
            tune.storage_url(t, uri)
        assert info.value.key == "tune.storage" and "secret" not in str(info.value)
        assert "postgresql+psycopg://" in info.value.allowed
    mine = dataclasses.replace(t, storage="sqlite:////tmp/mine.db")
    assert tune.storage_url(mine, "http://127.0.0.1:5001") == "sqlite:////tmp/mine.db"


def test_the_study_never_shares_mlflows_database(resolved, store_uri, tmp_path):
    from annlab import tracking

    tracking.open(store_uri, "annlab")  # a store with MLflow's tables
    for storage in (store_uri, f"{store_uri}?timeout=30"):  # the same, or another name for it
        t = _tune(resolved, f"tune.storage='{storage}'")
        with pytest.raises(ConfigError, match="holds MLflow's tracking tables"):
            tune.storage_url(t, "http://127.0.0.1:5001")
    t = _tune(resolved, "tune.storage=mysql://me@db/optuna")
    with pytest.raises(Exception, match="needs the Python module 'MySQLdb'"):
        tune.storage_url(t, "http://127.0.0.1:5001")


def test_a_study_opened_for_another_store_is_refused_naming_both(resolved, tmp_path):
    t = _tune(resolved, "tune.study=moons")
    first, second = (f"sqlite:///{tmp_path / name / 'mlflow.db'}" for name in ("a", "b"))
    shared = f"sqlite:///{tmp_path / 'optuna.db'}"  # one storage named for both
    study, created = tune.open_study(t, shared)
    tune.check_belongs(study, created, first, "annlab")
    study, created = tune.open_study(t, shared)
    tune.check_belongs(study, created, first, "annlab")  # the same store: resumed
    for uri, experiment in ((second, "annlab"), (first, "other")):
        study, created = tune.open_study(t, shared)
        with pytest.raises(tune.OtherStore) as info:
            tune.check_belongs(study, created, uri, experiment)
        assert first in str(info.value) and uri in str(info.value)
        assert f"experiment {experiment!r}" in str(info.value)
    # By default each store's studies live beside it, apart.
    assert tune.storage_url(t, first) != tune.storage_url(t, second)


def test_suggestions_follow_the_space_and_the_same_seed_proposes_the_same_configs(
        resolved, tmp_path):
    t = _tune(resolved, "tune.seed=7", "tune.study=s")

    def proposals(db):
        study, created = tune.open_study(t, f"sqlite:///{tmp_path / db}")
        assert created
        tune.sampler_and_pruner(t, study)
        out = []
        for _ in range(12):  # past TPE's 10 random start-up trials
            trial = study.ask()
            values = tune.suggest(trial, t)
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


def test_workers_joining_a_study_do_not_propose_the_creators_configs(resolved, tmp_path):
    """Two workers started together both find an empty study: the same seed would have them
    ask the same values trial for trial."""
    t = _tune(resolved, "tune.study=s")

    def first_values(created):
        study, _ = tune.open_study(t, f"sqlite:///{tmp_path / f'{created}.db'}")
        tune.sampler_and_pruner(t, study, created)
        return [tune.suggest(study.ask(), t) for _ in range(3)]

    assert first_values(True) != first_values(False)


def test_surplus_trials_of_a_shared_study_are_not_run(resolved, tmp_path):
    study, _ = tune.open_study(_tune(resolved, "tune.study=s"), f"sqlite:///{tmp_path / 'o.db'}")
    trials = [study.ask() for _ in range(5)]  # five workers ask at once for a budget of 3
    claimed = [tune.claim(study, t, 3) for t in trials]
    assert claimed == [True, True, True, False, False]
    states = [t.state for t in study.get_trials()]
    assert states[3:] == [optuna.trial.TrialState.FAIL] * 2
    assert tune.remaining(study, 3) == 0


def test_a_trial_reopened_in_its_job_reports_prunes_and_renews_its_heartbeat(resolved,
                                                                           tmp_path):
    """What annlab.study reads of Optuna's privates: a trial's storage id reopens it in
    another study object (its job's), and the storage renews that trial's heartbeat."""
    import sqlite3
    from types import SimpleNamespace

    url = f"sqlite:///{tmp_path / 'o.db'}"
    t = _tune(resolved, "tune.study=s", f"tune.storage={url}", "tune.report_every=5",
              "tune.pruner.name=median", "tune.pruner.startup_trials=1",
              "tune.pruner.warmup_epochs=0")
    study, _ = tune.open_study(t, url)
    tune.sampler_and_pruner(t, study)
    done = study.ask()
    done.report(0.1, 5)
    study.tell(done, 0.1)
    trial = study.ask()
    reporter = tune.Reporter(dataclasses.replace(t, trial_id=tune.trial_id(trial)))  # its job
    assert reporter.trial.number == trial.number
    model = SimpleNamespace(n_iter_=5, history_={tune.OBJECTIVE: [0.4] * 5})
    assert reporter(model)  # worse than the median at epoch 5: pruned
    (reopened,) = [t for t in optuna.load_study(study_name="s", storage=url).trials
                   if t.number == trial.number]
    assert reopened.intermediate_values == {5: 0.4}
    with sqlite3.connect(tmp_path / "o.db") as db:
        beats = db.execute("SELECT trial_id FROM trial_heartbeats").fetchall()
    assert beats == [(tune.trial_id(trial),)]
