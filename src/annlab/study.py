"""`make tune`: an Optuna study driven by ask-and-tell, each trial a job and a child run.

The sweeper has resolved and checked the config (:func:`annlab.spec.resolve`: the study's
settings and its space are rows of :mod:`annlab.rules`). :func:`run` opens the study in Optuna's
own database (created, or resumed by name; never MLflow's: both keep an ``alembic_version``
table) and the study's parent run, then asks the sampler for as many trials as the launcher runs
at once, launches them, and tells the study how each ended: its final validation
misclassification, or pruned. Trials prune themselves from their validation curves
(:class:`Reporter`). Several processes started with the same study name and storage share it:
together they run exactly ``tune.n_trials`` trials (see :func:`claim`); a trial whose process
died is failed by Optuna's heartbeat and asked again, never counted twice; the last worker to
finish writes the summary onto the parent (:mod:`annlab.study_report`).

This is annlab's one adapter to Optuna: the two private attributes it reads (a trial's storage
id, to reopen the trial in its job; the study's storage, to renew a trial's heartbeat as
``Study.optimize`` does) are read here only, pinned by tests/unit/test_study.py.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import Trial, TrialState

from annlab import databases, interrupts, multirun, names, tracking
from annlab.config import ConfigError
from annlab.databases import redact
from annlab.errors import AnnlabError
from annlab.names import Status
from annlab.spec import RunSpec, TuneSpec, replaced, run_name

optuna.logging.set_verbosity(optuna.logging.WARNING)
# The heartbeat and its retry callback are marked experimental; they are Optuna's own way to
# fail and re-ask the trials of dead processes.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with")

OBJECTIVE = "val_misclassification"  # the final validation misclassification, minimised
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60  # a RUNNING trial silent this long belongs to a dead process
CLAIMED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
ENDED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS_ATTR = "annlab.surplus"
PARENT_ATTR = "annlab.mlflow_parent_run_id"  # the study's user attribute naming its MLflow run
RUN_ATTR = "annlab.mlflow_run_id"  # a trial's user attribute naming its MLflow run
STORE_ATTR = "annlab.tracking_store"  # ... the tracking store its trials are tracked in
EXPERIMENT_ATTR = "annlab.experiment"  # ... and the experiment


# -- where the study lives -------------------------------------------------------------------

OWN_DATABASE = ("a database of Optuna's own, never MLflow's (both keep an alembic_version "
                "table): sqlite:///<path>, or postgresql+psycopg://<user>@<host>:<port>/"
                "<database> with a database of its own beside MLflow's")


def storage_url(tune: TuneSpec, tracking_uri: str) -> str:
    """``tune.storage``, else ``optuna.db`` beside a sqlite tracking store, so that a study
    lives and goes with the store its trials are tracked in; a tracking server (or a database
    store) has no default. Refused, before anything is written, when it is MLflow's own
    database."""
    if tune.storage:
        url = tune.storage
    elif (db := tracking.sqlite_path(tracking_uri)) is not None:
        url = f"sqlite:///{db.parent / 'optuna.db'}"
    else:
        raise ConfigError("tune.storage", None, f"with the tracking store {redact(tracking_uri)}, "
                          f"{OWN_DATABASE}")
    if url.split("?")[0] == tracking_uri.split("?")[0] or databases.holds_mlflow(
            databases.tables(url, "tune.storage")):
        raise ConfigError("tune.storage", redact(url), f"{OWN_DATABASE}; this one holds "
                          "MLflow's tracking tables")
    return url


class OtherStore(AnnlabError):
    """A study that belongs to another tracking store or experiment."""


def check_belongs(study: optuna.Study, created: bool, tracking_uri: str, experiment: str
                  ) -> None:
    """A new study records the tracking store and experiment its trials go to; one opened
    again must be opened for the same, or its trials would be counted in one store and
    tracked in another."""
    here = {STORE_ATTR: redact(tracking_uri), EXPERIMENT_ATTR: experiment}
    there = {key: study.user_attrs.get(key) for key in here}
    if created or None in there.values():  # new, or made before studies recorded their store
        for key, value in here.items():
            study.set_user_attr(key, value)
    elif there != here:
        raise OtherStore(f"study {study.study_name!r} belongs to the tracking store "
                         f"{there[STORE_ATTR]}, experiment {there[EXPERIMENT_ATTR]!r}; this "
                         f"command tracks into {here[STORE_ATTR]}, experiment "
                         f"{here[EXPERIMENT_ATTR]!r}: choose another tune.study or "
                         "tune.storage, or the study's own store")


# -- the study -------------------------------------------------------------------------------

def storage(url: str) -> RDBStorage:
    """Optuna's database storage, with the heartbeat that fails (and re-asks) the trials of
    dead processes. A new sqlite file is created under a lock, once."""
    # Several processes write one sqlite study: wait for the lock rather than fail at 5 s.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None

    def make() -> RDBStorage:
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                          grace_period=GRACE_SECONDS,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").split("?")[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        with tracking.file_lock(f"{path}.lock"):
            return make()
    return make()


def open_study(tune: TuneSpec, url: str) -> tuple[optuna.Study, bool]:
    """The study of this name in ``url``, created if new; returns (study, created)."""
    store = storage(url)
    try:
        return optuna.create_study(study_name=tune.study, storage=store,
                                   direction="minimize"), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=tune.study, storage=store), False


def sampler_and_pruner(tune: TuneSpec, study: optuna.Study, created: bool = True) -> None:
    """Set the study's sampler (seeded) and pruner from the config.

    The process that creates a study seeds its sampler from ``tune.seed``: one worker on a
    fresh study proposes the same sequence for the same seed. A process that joins or resumes
    a study lets Optuna seed its sampler at random: two workers started together both see an
    empty study, and the same seed would have them propose the same configs. Which worker asks
    which trial depends on timing anyway.
    """
    seed = int(hashlib.sha256(f"{tune.seed}:{len(study.trials)}".encode()).hexdigest()[:8],
               16) if created else None  # None: Optuna seeds it at random
    study.sampler = (optuna.samplers.TPESampler(seed=seed) if tune.sampler == "tpe"
                     else optuna.samplers.RandomSampler(seed=seed))
    study.pruner = pruner(tune)


def pruner(tune: TuneSpec) -> optuna.pruners.BasePruner:
    """The configured pruner (a study's pruner lives in its process, not in the storage: the
    trials' jobs build the same one)."""
    p = tune.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials,
                                           n_warmup_steps=p.warmup_epochs, interval_steps=1)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(p.warmup_epochs, 1),
                                                  reduction_factor=p.reduction_factor)


def suggest(trial: Trial, tune: TuneSpec) -> dict[str, Any]:
    """The trial's values for every key of the search space."""
    values = {}
    for key, p in tune.space.items():
        if p["type"] == "categorical":
            values[key] = trial.suggest_categorical(key, list(p["choices"]))
        elif p["type"] == "int":
            values[key] = trial.suggest_int(key, int(p["low"]), int(p["high"]),
                                            log=bool(p.get("log")))
        else:
            values[key] = trial.suggest_float(key, p["low"], p["high"], log=bool(p.get("log")))
    return values


def claim(study: optuna.Study, trial: Trial, n_trials: int) -> bool:
    """Whether ``trial`` is within the study's budget; a surplus trial (asked by one of
    several workers once the others had claimed the last ones) is failed, marked, and not
    run. Trial numbers are handed out by the database, so exactly ``n_trials`` are run."""
    ahead = sum(1 for t in study.get_trials(deepcopy=False, states=CLAIMED)
                if t.number < trial.number)
    if ahead < n_trials:
        return True
    trial.set_user_attr(SURPLUS_ATTR, True)
    study.tell(trial, state=TrialState.FAIL)
    return False


def remaining(study: optuna.Study, n_trials: int) -> int:
    """Trials still to ask: the budget minus what is done or under way."""
    return n_trials - len(study.get_trials(deepcopy=False, states=CLAIMED))


def fail_stale(study: optuna.Study) -> None:
    """Fail (and re-ask) the RUNNING trials of processes whose heartbeat stopped."""
    optuna.storages.fail_stale_trials(study)


def retry(study: optuna.Study, trial_number: int) -> None:
    """Fail a trial that was interrupted and ask it again (a WAITING copy)."""
    frozen = study.get_trials(deepcopy=False)[trial_number]
    if frozen.state == TrialState.RUNNING:
        study.tell(trial_number, state=TrialState.FAIL)
        RetryHeartbeatStaleTrialCallback()(study, frozen)


# -- the study, driven from the launching process ------------------------------------------

Launch = Callable[[Sequence[Sequence[str]], int], Sequence[Any]]  # (jobs, first job) -> returns


def run(base: RunSpec, point: list[str], url: str, batch: int, launch: Launch,
        out: Path) -> list[Any]:
    """Run what is left of the study ``base.tune`` describes: ``batch`` trials at a time, each
    the job ``point`` plus its sampled values, through ``launch``; the summary goes under
    ``out`` and onto the parent once no trial runs anywhere."""
    t, uri = base.tune, base.tracking.uri
    with interrupts.raised():
        experiment = tracking.open(uri, base.tracking.experiment)
        experiment.save_view(f"annlab-study-{t.study}", f"annlab: study {t.study}", {
            **tracking.BEST_VIEW_STATE,
            "searchFilter": f"tags.`{names.STUDY}` = '{t.study}' and tags.`{names.TRIAL}` != ''"})
        with interrupts.held():
            study, created = open_study(t, url)
            check_belongs(study, created, uri, base.tracking.experiment)
            fail_stale(study)
            sampler_and_pruner(t, study, created)
    launched: list[Any] = []
    asked: list[Trial] = []

    def others_run_trials() -> bool:
        """Interrupted: the trials under way are failed and asked again; the parent stays
        open if other workers still run trials."""
        with interrupts.held():
            for trial in asked:
                retry(study, trial.number)
            return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    name = f"study-{t.study}"
    with multirun.launching(experiment, lambda: _parent(experiment, study, created, t, url,
                                                           base.data.label),
                            name, "study", "finished trials count, interrupted ones are asked "
                            "again", keep_parent=others_run_trials) as (parent, _):
        print(f"{'starting' if created else 'joining'} study {t.study!r} ({url}): "
              f"{t.n_trials} trials in all, {remaining(study, t.n_trials)} to ask; parent run "
              f"{name} ({parent.run_id})", flush=True)
        ended = len(study.get_trials(deepcopy=False, states=ENDED))
        with multirun.reporting(experiment, parent, t.n_trials, ended, width=44):
            while True:
                with interrupts.held():
                    asked = _ask(study, t, batch)
                    jobs = [_job(point, trial, base, parent, url) for trial in asked]
                if not asked:
                    break
                returns = launch(jobs, asked[0].number)
                with interrupts.held():
                    for trial, ret in zip(asked, returns):
                        _tell(study, trial, ret)
                launched.append(returns)
                asked = []
        experiment.store.check_reachable("the study's summary is not written; rerun the same "
                                         "command once it answers", patient=True)
        from annlab import study_report  # its figures: not before the trials start

        study_report.write(experiment, study, parent, name, t, base.train.epochs,
                           base.data.split_sizes()[1], out)
    return launched


def _parent(experiment: tracking.Experiment, study: optuna.Study, created: bool, t: TuneSpec,
            url: str, dataset: str) -> tuple[tracking.Run, bool]:
    """The study's one parent run: made by the process that created the study, found by the
    others through the study's user attribute."""
    if created or PARENT_ATTR in study.user_attrs:
        parent, resumed = experiment.parent_run({names.STUDY: t.study, names.STUDY_STORAGE: url},
                                                f"study-{t.study}", "pipelines/run.py",
                                                {names.DATASET: dataset})
        study.set_user_attr(PARENT_ATTR, parent.run_id)
        return parent, resumed
    deadline = time.monotonic() + 120  # the creating worker is making it
    while PARENT_ATTR not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)
    return _parent(experiment, study, True, t, url, dataset)


def _ask(study: optuna.Study, t: TuneSpec, batch: int) -> list[Trial]:
    """Up to ``batch`` trials within the study's budget (WAITING ones, asked again, first)."""
    asked = []
    while len(asked) < batch:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if remaining(study, t.n_trials) <= 0 and not waiting:
            break
        trial = study.ask()
        if not claim(study, trial, t.n_trials):
            break
        asked.append(trial)
    return asked


def _job(point: list[str], trial: Trial, base: RunSpec, parent: tracking.Run, url: str
         ) -> list[str]:
    """The trial's job: the study's point, its sampled values, which trial it is; named by its
    values (floats to 3 significant digits)."""
    values = suggest(trial, base.tune)
    shown = {k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in values.items()}
    label = f"trial-{trial.number}-" + run_name(replaced(base.config, shown), base.config)
    return multirun.job_overrides(
        [*point, *(f"{k}={v}" for k, v in values.items()), f"tune.trial={trial.number}",
         f"tune.trial_id={trial_id(trial)}", f"tune.storage={multirun.quoted(url)}"],
        parent, base.tracking.uri, label)


def _tell(study: optuna.Study, trial: Trial, ret) -> None:
    """What the trial's job reported: a value, pruned, or failed (its run says why)."""
    try:
        result = ret.return_value
    except Exception:  # the job itself raised: recorded as FAILED by its run
        result = {"status": Status.FAILED}
    if result.get("run_id"):  # each trial points to its run (the run to it: annlab.trial)
        trial.set_user_attr(RUN_ATTR, result["run_id"])
    if result.get("status") != Status.FINISHED:
        study.tell(trial, state=TrialState.FAIL)
    elif result.get("pruned_at") is not None:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, result["value"])


# -- inside a trial's job --------------------------------------------------------------------

def trial_id(trial: Trial) -> int:
    """The trial's id in its storage: what reopens it in another process."""
    return trial._trial_id


class Reporter:
    """A training job's epoch callback: reports the validation misclassification to its trial
    every ``report_every`` epochs and asks the pruner; returns True to stop (pruned). Its
    storage calls are not cut in two by a signal (:func:`annlab.interrupts.held`): one that
    lands inside a transaction would leave the database locked for the study's own tell."""

    def __init__(self, tune: TuneSpec):
        with interrupts.held():
            self.study = optuna.load_study(study_name=tune.study, storage=storage(tune.storage),
                                           pruner=pruner(tune))
        self.trial = Trial(self.study, tune.trial_id)
        self.every, self.beat = tune.report_every, 0.0

    def __call__(self, model) -> bool:
        now = time.monotonic()
        epoch = model.n_iter_
        if epoch == 0 or now - self.beat < HEARTBEAT_SECONDS and epoch % self.every:
            return False
        with interrupts.held():
            if now - self.beat >= HEARTBEAT_SECONDS:  # what Study.optimize does for its trials
                self.study._storage.record_heartbeat(trial_id(self.trial))
                self.beat = now
            if epoch % self.every:
                return False
            self.trial.report(model.history_[OBJECTIVE][-1], epoch)
            return self.trial.should_prune()
