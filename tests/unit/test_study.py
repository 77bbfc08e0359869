"""The study's settings and Optuna: the search space and its checks, seeded suggestions,
shared budgets, and the two private attributes annlab.study reads (pinned here)."""

import os

import optuna
import pytest
from omegaconf import OmegaConf

from annlab import study as tune
from annlab.config import ConfigError

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
        tune.check_space(cfg)
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


def test_conf_tune_default_is_a_valid_study(compose_cfg):
    cfg = compose_cfg(["tune=default"])
    tune.validate(cfg.tune)
    tune.check_space(cfg)
    assert OmegaConf.select(cfg, "tune.space.model.activation.type") == "categorical"
    assert os.path.basename(cfg.paths.study_store) == "optuna.db"


def test_a_trial_reopened_in_its_job_reports_prunes_and_renews_its_heartbeat(compose_cfg,
                                                                           tmp_path):
    """What annlab.study reads of Optuna's privates: a trial's storage id reopens it in
    another study object (its job's), and the storage renews that trial's heartbeat."""
    import sqlite3
    from types import SimpleNamespace

    url = f"sqlite:///{tmp_path / 'o.db'}"
    cfg = compose_cfg(["tune=default", "tune.study=s", f"tune.storage={url}",
                       "tune.report_every=5", "tune.pruner.name=median",
                       "tune.pruner.startup_trials=1", "tune.pruner.warmup_epochs=0"])
    study, _ = tune.open_study(cfg.tune, url)
    tune.sampler_and_pruner(cfg.tune, study)
    done = study.ask()
    done.report(0.1, 5)
    study.tell(done, 0.1)
    trial = study.ask()
    cfg.tune.trial_id = tune.trial_id(trial)
    reporter = tune.Reporter(cfg.tune)  # as a job's process opens it
    assert reporter.trial.number == trial.number
    model = SimpleNamespace(n_iter_=5, history_={tune.OBJECTIVE: [0.4] * 5})
    assert reporter(model)  # worse than the median at epoch 5: pruned
    (reopened,) = [t for t in optuna.load_study(study_name="s", storage=url).trials
                   if t.number == trial.number]
    assert reopened.intermediate_values == {5: 0.4}
    with sqlite3.connect(tmp_path / "o.db") as db:
        beats = db.execute("SELECT trial_id FROM trial_heartbeats").fetchall()
    assert beats == [(tune.trial_id(trial),)]
