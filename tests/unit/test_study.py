"""The study and Optuna: where it lives, reproducible batches whatever order their jobs end in,
pruning a trial's job decides alone, shared budgets, the two records of a trial made to agree,
and the private attributes annlab.study reads (pinned here). Its settings' checks:
tests/unit/test_spec.py."""

import dataclasses
import math
import random
import sqlite3
import time
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from annlab import names, tracking
from annlab import study as tune
from annlab.config import ConfigError
from annlab.names import Status
from annlab.tracking import liveness


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


def test_the_space_holds_every_point_of_the_default_grid(resolved):
    """The study replaces the grid: whatever the grid tries, the study can ask."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    space = _tune(resolved).space
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        grid = compose(config_name="config", overrides=["sweep=default"],
                       return_hydra_config=True).hydra.sweeper.params
    for key, values in grid.items():
        p = space[key]
        for value in str(values).split(","):
            if p["type"] == "categorical":
                assert value in p["choices"]
            else:
                assert p["low"] <= float(value) <= p["high"], (key, value)


# -- reproducible batches --------------------------------------------------------------------

def _value(params) -> float:
    """A made-up objective with ties, as validation misclassification has."""
    shape = {"tanh": 0.0, "sigmoid": 0.01, "relu": 0.02}[params["model.activation"]]
    return round(abs(math.log(params["train.learning_rate"])) / 20 + shape
                 + abs(params["model.hidden_nodes"] - 6) / 200, 2)


def _curve(params, step: int) -> float:
    """What the trial's job reports at ``step``: falling towards its value."""
    return _value(params) + 0.3 / step ** 0.5


class _Job:
    """A trial's job, step by step: reports every ``every`` epochs up to ``epochs``, asks its
    pruner (a job builds its own), stops when pruned."""

    def __init__(self, study, trial, t, epochs=400):
        self.study, self.trial, self.t, self.epochs = study, trial, t, epochs
        self.steps = iter(range(t.report_every, epochs + 1, t.report_every))
        self.outcome = None

    def step(self) -> bool:
        """One report; False once the job has ended."""
        step = next(self.steps, None)
        if step is None:
            self.outcome = ("COMPLETE", _value(self.trial.params), None)
            return False
        self.trial.report(_curve(self.trial.params, step), step)
        self.study.pruner = tune.pruner(self.t)
        if self.trial.should_prune():
            self.outcome = ("PRUNED", None, step)
            return False
        return True


def _run(t, size, order="forward", seed=0, study=None, stop_after=None):
    """A study as annlab's launching process runs it: batches asked, their jobs run with
    their steps interleaved in ``order`` (forward: each job to its end in turn; reverse;
    random), then told in the order they ended. Stops after ``stop_after`` batches."""
    study = study or optuna.create_study(direction="minimize")
    rng = random.Random(seed)
    batches = 0
    while batches != stop_after:
        asked = []
        tune.ask_batch(study, t, size, "me", asked)
        if not asked:
            break
        jobs = [_Job(study, trial, t) for trial, _ in asked]
        running, ended = list(jobs), []
        while running:
            job = {"forward": running[0], "reverse": running[-1],
                   "random": rng.choice(running)}[order]
            if not job.step():
                running.remove(job)
                ended.append(job)
        for job in ended:
            state, value, _ = job.outcome
            study.tell(job.trial, value, state=TrialState[state])
        batches += 1
    return study


def _record(study):
    """What must be the same on a rerun: each trial's values, state, value and pruned epoch, in
    the order of the batches."""
    return [(t.user_attrs.get(tune.BATCH_ATTR), sorted(t.params.items()), t.state.name, t.value,
             max(t.intermediate_values) if t.state == TrialState.PRUNED else None)
            for t in study.trials if t.state != TrialState.FAIL]


@pytest.mark.parametrize("pruner", ["successive_halving", "median", "threshold"])
def test_the_same_seed_asks_the_same_trials_whatever_order_its_jobs_end_in(resolved, pruner):
    t = _tune(resolved, "tune.n_trials=14", "tune.seed=3", f"tune.pruner.name={pruner}",
              "tune.report_every=50", "tune.pruner.warmup_epochs=50",
              "tune.pruner.startup_trials=1")
    first = _record(_run(t, 2))
    for order, seed in [("reverse", 0), ("random", 1), ("random", 2), ("forward", 0)]:
        assert _record(_run(t, 2, order, seed)) == first, order
    assert len(first) == 14 and [b for b, *_ in first] == [k // 2 for k in range(14)]
    assert len({str(params) for _, params, *_ in first}) == 14
    if pruner != "threshold":  # a curve this good is never as bad as a guess
        assert any(state == "PRUNED" for _, _, state, *_ in first)
    other = _record(_run(dataclasses.replace(t, seed=4), 2))
    assert [p for _, p, *_ in other] != [p for _, p, *_ in first]


def test_a_study_resumed_after_an_interrupted_batch_asks_what_it_would_have(resolved):
    """The batch under way is failed and asked again with its values (copies, which sample
    nothing): the trials after it get the seeds they would have had."""
    t = _tune(resolved, "tune.n_trials=12", "tune.seed=5", "tune.report_every=50",
              "tune.pruner.name=successive_halving", "tune.pruner.warmup_epochs=50")
    whole = _record(_run(t, 2))
    study = _run(t, 2, stop_after=4)
    asked = []
    tune.ask_batch(study, t, 2, "me", asked)  # batch 4 asked, then interrupted
    for trial, _ in asked:
        tune.retry(study, trial.number)
    again = []
    tune.ask_batch(study, t, 2, "me", again)  # the copies, on their own
    assert [trial.params for trial, _ in again] == [trial.params for trial, _ in asked]
    assert [v for _, v in again] == [v for _, v in asked]
    for trial, _ in again:  # ... then the study goes on
        study.tell(trial, _value(trial.params))
    resumed = _run(t, 2, study=study)
    assert [r for r in _record(resumed) if r[0] != 4] == [r for r in whole if r[0] != 4]
    states = [s.state for s in resumed.trials]
    assert states.count(TrialState.FAIL) == 2 and len(states) == 14


def test_workers_sharing_a_study_never_sample_alike(resolved):
    """Two processes that find the same empty study take turns asking: each trial's seed
    follows its place in the study, so neither echoes the other's values."""
    t = _tune(resolved, "tune.n_trials=8", "tune.pruner.name=none")
    study = optuna.create_study(direction="minimize")
    mine, theirs = [], []
    for _ in range(4):
        tune.ask_batch(study, t, 2, "a", mine)  # the other's trials still run (liars)
        tune.ask_batch(study, t, 2, "b", theirs)
        for trial, _ in mine + theirs:
            if not tune._frozen(study, trial).state.is_finished():
                study.tell(trial, _value(trial.params))
        mine.clear(), theirs.clear()
    assert len({str(sorted(s.params.items())) for s in study.trials}) == 8
    assert {s.user_attrs[tune.ASKER_ATTR] for s in study.trials} == {"a", "b"}


def test_surplus_trials_of_a_shared_study_are_not_run(resolved, tmp_path):
    study, _ = tune.open_study(_tune(resolved, "tune.study=s"), f"sqlite:///{tmp_path / 'o.db'}")
    trials = [study.ask() for _ in range(5)]  # five workers ask at once for a budget of 3
    claimed = [tune.claim(study, t, 3) for t in trials]
    assert claimed == [True, True, True, False, False]
    states = [t.state for t in study.get_trials()]
    assert states[3:] == [TrialState.FAIL] * 2
    assert tune.remaining(study, 3) == 0


# -- pruning -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n_classes, guess", [(2, 0.5), (3, 2 / 3)])
def test_the_threshold_pruner_stops_a_trial_no_better_than_a_guess(resolved, n_classes, guess):
    t = _tune(resolved, "tune.pruner.name=threshold", "tune.pruner.warmup_epochs=100")
    study = optuna.create_study(direction="minimize", pruner=tune.pruner(t, n_classes))

    def pruned(reports):
        trial = study.ask()
        for step, value in reports:
            trial.report(value, step)
        return trial.should_prune()

    assert pruned([(100, guess)]) and pruned([(100, 0.9)]) and pruned([(200, guess)])
    assert not pruned([(50, 0.9)])  # warming up
    assert not pruned([(100, guess - 0.005)])  # one validation sample better than a guess
    assert not pruned([(100, 0.14), (200, 0.13)])  # it learns


def test_comparing_pruners_see_only_the_trials_of_earlier_batches(resolved):
    t = _tune(resolved, "tune.pruner.name=successive_halving", "tune.pruner.warmup_epochs=10",
              "tune.pruner.reduction_factor=3")
    study = optuna.create_study(direction="minimize", pruner=tune.pruner(t))

    def trial(batch, value):
        trial = study.ask()
        trial.set_user_attr(tune.BATCH_ATTR, batch)
        trial.report(value, 10)
        return trial

    first = [trial(0, 0.1), trial(0, 0.2)]
    assert not any(s.should_prune() for s in first)  # the first batch has nobody to trail
    for s in first:
        study.tell(s, 0.1)
    later = trial(2, 0.01)  # of a later batch, reporting first: unseen by batch 1
    better, worse = trial(1, 0.05), trial(1, 0.3)  # the best third of batch 0 and itself
    assert not better.should_prune() and worse.should_prune()
    assert not later.should_prune()
    assert tune._Earlier(study, 1).get_trials() == study.get_trials()[:2]


# -- the two records of a trial ----------------------------------------------------------------

def _dead_process() -> str:
    """A process of this machine that has ended (its pid's start time no longer matches)."""
    me = liveness.ProcessId.current()
    return str(dataclasses.replace(me, started=str(int(me.started or 0) + 1)))


def test_settling_makes_each_trial_agree_with_its_run(resolved, store_uri, tmp_path):
    """After an interrupt, or a process that died: a finished run completes (or prunes) its
    trial with the run's own value; a failed run (a config that diverged) fails it, as the
    job's own report would; a killed, missing or abandoned run fails it and asks it again with
    its values; a run its job still writes is left to the next command."""
    experiment = tracking.open(store_uri, "settle")
    client = experiment.store.client
    parent = client.create_run(experiment.id).info.run_id
    t = _tune(resolved, "tune.n_trials=7", "tune.pruner.name=none")
    study = optuna.create_study(direction="minimize", storage=f"sqlite:///{tmp_path / 'o.db'}")
    asked = []
    tune.ask_batch(study, t, 7, "me", asked)
    trials = [trial for trial, _ in asked]
    alive = liveness.writer_tags()
    runs = {  # trial -> (status, tags, final validation misclassification)
        0: (Status.FINISHED, {}, 0.025), 1: (Status.FINISHED, {names.PRUNED_AT: "50"}, 0.2),
        2: (Status.KILLED, {}, 0.3), 3: (Status.FAILED, {}, None),
        4: (Status.RUNNING, {names.PROCESS: _dead_process(), names.HEARTBEAT: "0"}, None),
        5: (Status.RUNNING, alive, 0.1)}  # trial 6: its job never started
    ids = {}
    for n, (status, tags, value) in runs.items():
        run = client.create_run(experiment.id, tags={names.PARENT_RUN: parent,
                                                     names.TRIAL: str(n), **tags})
        ids[n] = run.info.run_id
        if value is not None:
            client.log_metric(ids[n], tune.OBJECTIVE, 0.4, step=1)
            client.log_metric(ids[n], tune.OBJECTIVE, value, step=2)
        if n == 1:
            trials[1].report(0.2, 50)
        if status != Status.RUNNING:
            client.set_terminated(ids[n], status)
    start = time.monotonic()
    left = tune.settle(study, experiment, parent, trials, wait=0.5)
    assert left == [5] and time.monotonic() - start >= 0.5  # waited for the live job
    states = [s.state.name for s in study.trials]
    assert states[:7] == ["COMPLETE", "PRUNED", "FAIL", "FAIL", "FAIL", "RUNNING", "FAIL"]
    assert study.trials[0].value == 0.025 and study.trials[1].value == 0.2
    assert study.trials[0].user_attrs[tune.RUN_ATTR] == ids[0]
    assert study.trials[3].user_attrs[tune.RUN_ATTR] == ids[3]
    copies = study.trials[7:]  # asked again, with the same values, in order
    assert [c.state for c in copies] == [TrialState.WAITING] * 3
    assert [c.params for c in copies] == [study.trials[n].params for n in (2, 4, 6)]
    assert client.get_run(ids[4]).info.status == Status.KILLED  # its process is gone
    assert client.get_run(ids[5]).info.status == Status.RUNNING
    client.set_terminated(ids[5], Status.FINISHED)  # the job ends: the next command settles it
    assert tune.settle(study, experiment, parent, trials) == []
    assert study.trials[5].state == TrialState.COMPLETE and study.trials[5].value == 0.1


def test_a_trial_asked_by_a_process_that_died_is_an_orphan(resolved):
    t = _tune(resolved, "tune.n_trials=3", "tune.pruner.name=none")
    study = optuna.create_study(direction="minimize")
    for asker in (str(liveness.ProcessId.current()), _dead_process(), "elsewhere 1 2 3"):
        tune.ask_batch(study, t, 1, asker, [])
    assert [s.number for s in tune.orphans(study)] == [1]  # another machine: its heartbeat


# -- inside a trial's job ----------------------------------------------------------------------

def _model(epoch, value, epochs=60):
    return SimpleNamespace(n_iter_=epoch, epochs=epochs, classes_=[0, 1],
                           history_={tune.OBJECTIVE: [value] * epoch})


def test_a_trial_reopened_in_its_job_reports_prunes_and_renews_its_heartbeat(resolved,
                                                                           tmp_path):
    """What annlab.study reads of Optuna's privates: a trial's storage id reopens it in
    another study object (its job's), and the storage renews that trial's heartbeat."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    t = _tune(resolved, "tune.study=s", f"tune.storage={url}", "tune.report_every=5",
              "tune.pruner.name=median", "tune.pruner.startup_trials=1",
              "tune.pruner.warmup_epochs=0")
    study, _ = tune.open_study(t, url)
    first = []
    tune.ask_batch(study, t, 1, "me", first)
    first[0][0].report(0.1, 5)
    study.tell(first[0][0], 0.1)
    asked = []
    tune.ask_batch(study, t, 1, "me", asked)  # the next batch
    trial = asked[0][0]
    with sqlite3.connect(tmp_path / "o.db") as db:  # asking beat once; the job beats again
        db.execute("DELETE FROM trial_heartbeats")
    reporter = tune.Reporter(dataclasses.replace(t, trial_id=tune.trial_id(trial)))  # its job
    assert reporter.trial.number == trial.number
    assert reporter(_model(5, 0.4))  # worse than the median of batch 0 at epoch 5: pruned
    (reopened,) = [s for s in optuna.load_study(study_name="s", storage=url).trials
                   if s.number == trial.number]
    assert reopened.intermediate_values == {5: 0.4}
    with sqlite3.connect(tmp_path / "o.db") as db:
        beats = db.execute("SELECT trial_id FROM trial_heartbeats").fetchall()
    assert beats == [(tune.trial_id(trial),)]


def test_a_job_whose_trial_the_study_ended_does_not_run(resolved, tmp_path):
    """Interrupted, the study fails a trial whose job had not started its run: the job, if it
    starts late, refuses; if it had started, it fails at its next report or at its end."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    t = _tune(resolved, "tune.study=s", f"tune.storage={url}", "tune.report_every=50",
              "tune.pruner.name=none")
    study, _ = tune.open_study(t, url)
    asked = []
    tune.ask_batch(study, t, 3, "me", asked)
    late, reporting, ending = (tune.Reporter(dataclasses.replace(t, trial_id=tune.trial_id(s)))
                               for s, _ in asked[1:] + asked[:1])
    for trial, _ in asked:
        tune.retry(study, trial.number)
    with pytest.raises(tune.Ended, match="trial 1 of study 's' is FAIL"):
        tune.Reporter(dataclasses.replace(t, trial_id=tune.trial_id(asked[1][0])))
    with pytest.raises(tune.Ended, match="trial 2 "):
        reporting(_model(50, 0.1))
    assert not ending(_model(59, 0.1))
    with pytest.raises(tune.Ended, match="trial 0 "):
        ending(_model(60, 0.1))


def test_a_trial_beats_from_the_moment_it_is_asked(resolved, tmp_path):
    """So that an asker lost before its first renewal leaves a trial that goes stale."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    t = _tune(resolved, "tune.study=s", "tune.pruner.name=none")
    study, _ = tune.open_study(t, url)
    asked = []
    tune.ask_batch(study, t, 2, "me", asked)
    with sqlite3.connect(tmp_path / "o.db") as db:
        beats = db.execute("SELECT trial_id FROM trial_heartbeats").fetchall()
    assert sorted(beats) == sorted((tune.trial_id(trial),) for trial, _ in asked)


def test_the_launching_process_keeps_its_trials_alive_until_it_tells_them(resolved, tmp_path,
                                                                        monkeypatch):
    """A trial whose job has ended waits for the rest of its batch to be told; its heartbeat,
    renewed by the asking process meanwhile, keeps other processes from failing it."""
    monkeypatch.setattr(tune, "HEARTBEAT_SECONDS", 0.05)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    t = _tune(resolved, "tune.study=s", "tune.pruner.name=none")
    study, _ = tune.open_study(t, url)
    asked = []
    tune.ask_batch(study, t, 2, "me", asked)
    with sqlite3.connect(tmp_path / "o.db") as db:  # asking beat once; from now on, the renewal
        db.execute("DELETE FROM trial_heartbeats")
    with tune.beating(study, lambda: [trial for trial, _ in asked]):
        time.sleep(0.3)
    with sqlite3.connect(tmp_path / "o.db") as db:
        beats = db.execute("SELECT trial_id FROM trial_heartbeats").fetchall()
    assert sorted(beats) == sorted((tune.trial_id(trial),) for trial, _ in asked)


def test_a_study_made_anew_under_its_old_name_gets_a_parent_of_its_own(resolved, store_uri,
                                                                        experiment, tmp_path):
    """Its database deleted, a study of the same name and storage is another study: its trials
    must not be filed (and settled, and summarised) among the earlier study's."""
    t = _tune(resolved)
    exp = tracking.open(store_uri, experiment)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = optuna.create_study(study_name=t.study, storage=url)
    parent, resumed = tune._parent(exp, first, True, t, url, "moons")
    assert not resumed
    parent.end(Status.FINISHED)
    again, resumed = tune._parent(exp, optuna.load_study(study_name=t.study, storage=url), False,
                                  t, url, "moons")  # the same study rerun: its parent resumed
    assert (again.run_id, resumed) == (parent.run_id, True)
    again.end(Status.FINISHED)
    (tmp_path / "optuna.db").unlink()
    fresh = optuna.create_study(study_name=t.study, storage=url)
    new, resumed = tune._parent(exp, fresh, True, t, url, "moons")
    assert new.run_id != parent.run_id and not resumed
    assert tracking.Run(exp.store, new.run_id).record().tags[names.STUDY_KEY] == \
        fresh.user_attrs[tune.KEY_ATTR]


def test_trials_whose_heartbeat_stopped_are_settled_from_their_runs(resolved, store_uri,
                                                                    tmp_path, monkeypatch):
    """Asked on a machine that went silent, even before its first renewal: a trial whose run
    finished before it did is told so (not run again); one whose run was killed, or that has
    none, is failed and asked again; one whose job still writes its run is left until the
    run ends."""
    monkeypatch.setattr(tune, "GRACE_SECONDS", 1)
    experiment = tracking.open(store_uri, "stale")
    client = experiment.store.client
    parent = client.create_run(experiment.id).info.run_id
    t = _tune(resolved, "tune.n_trials=4", "tune.pruner.name=none")
    study = optuna.create_study(direction="minimize",
                                storage=tune.storage(f"sqlite:///{tmp_path / 'o.db'}"))
    asked = []
    tune.ask_batch(study, t, 4, "elsewhere 1 2 3", asked)
    ids = {}
    for n, status in [(0, Status.FINISHED), (1, Status.KILLED), (3, Status.RUNNING)]:
        ids[n] = client.create_run(experiment.id, tags={  # trial 2: its job never started
            names.PARENT_RUN: parent, names.TRIAL: str(n), **liveness.writer_tags()}
        ).info.run_id
        client.log_metric(ids[n], tune.OBJECTIVE, 0.05, step=1)
        if status != Status.RUNNING:
            client.set_terminated(ids[n], status)
    time.sleep(2.2)  # silent past the grace period since they were asked (their first beat)
    tune.fail_stale(study, experiment, parent)
    states = [s.state.name for s in study.trials]
    assert states[:4] == ["COMPLETE", "FAIL", "FAIL", "RUNNING"]
    assert study.trials[0].value == 0.05
    copies = study.trials[4:]
    assert [c.params for c in copies] == [study.trials[n].params for n in (1, 2)]
    assert all(c.state == TrialState.WAITING for c in copies)
    client.set_terminated(ids[3], Status.FINISHED)  # its job ends: the next start tells it
    tune.fail_stale(study, experiment, parent)
    assert study.trials[3].state == TrialState.COMPLETE and len(study.trials) == 6


def test_workers_settling_the_same_trials_at_once_end_and_copy_each_once(resolved, tmp_path,
                                                                         monkeypatch):
    """Two workers start after a machine was lost: the one that looks second settles trials
    the first has settled since its look, without an error and without a second copy."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    t = _tune(resolved, "tune.study=s", "tune.pruner.name=none")
    first, _ = tune.open_study(t, url)
    asked = []
    tune.ask_batch(first, t, 2, "elsewhere 1 2 3", asked)
    second, _ = tune.open_study(t, url)
    look = second.get_trials(deepcopy=True)  # its look: both RUNNING
    tune.retry(first, 0)
    tune._told(first, asked[1][0], "run-1", Status.FINISHED, None, 0.1)
    monkeypatch.setattr(second, "get_trials", lambda *a, **k: look)
    tune.retry(second, 0)
    tune._told(second, look[1], "run-1b", Status.FINISHED, None, 0.2)
    monkeypatch.undo()
    trials = first.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "WAITING"]
    assert trials[1].value == 0.1 and trials[1].user_attrs[tune.RUN_ATTR] == "run-1"
