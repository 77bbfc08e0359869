"""`make tune`: an Optuna study driven by ask-and-tell, each trial a job and a child run.

The sweeper has resolved and checked the config (:func:`annlab.spec.resolve`: the study's
settings and its space are rows of :mod:`annlab.rules`). :func:`run` opens the study in Optuna's
own database (created, or resumed by name; never MLflow's: both keep an ``alembic_version``
table) and the study's parent run, then runs the study in batches of as many trials as the
launcher runs at once: a batch is asked (:func:`ask_batch`) only once every earlier one is told,
its trials launched, and the study told how each ended: its final validation misclassification,
or pruned. Trials prune themselves from their own validation curves (:class:`Reporter`).

Reproducible: each sampled trial gets a sampler of its own, seeded from ``tune.seed`` and its
place among the sampled trials, and sees only what earlier batches told (and, as constant
liars, the earlier trials of its own batch); a pruner that compares trials compares a trial
only with those of earlier batches (:class:`EarlierBatches`). So one ``make tune`` with the
same seed, space, budget and worker count asks the same trials, prunes them at the same epochs
and finds the same best, whichever worker is faster. Several processes started with the same
study name and storage share it: together they run exactly ``tune.n_trials`` trials (see
:func:`claim`), never with the same seed, but what each trial saw then depends on timing.

A trial's two records agree: its MLflow run FINISHED and its Optuna trial COMPLETE or PRUNED,
or the run KILLED or FAILED and the trial FAIL (asked again with the same values). After an
interrupt, or on the next start after a process died (on this machine, or on another once its
heartbeat is silent: :func:`fail_stale`), :func:`settle` reads each open trial's run to decide;
a trial whose job still runs is left to the next command. The last worker to finish writes the
summary onto the parent (:mod:`annlab.study_report`).

This is annlab's one adapter to Optuna: the private attributes it reads (a trial's storage id,
to reopen the trial in its job; the study's storage, to renew heartbeats as ``Study.optimize``
does and find the stale ones, to read one trial or fail it, and for the view a comparing pruner
gets) are read here only, pinned by tests/unit/test_study.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, Trial, TrialState

from annlab import databases, interrupts, multirun, names, tracking
from annlab.config import ConfigError
from annlab.databases import redact
from annlab.errors import AnnlabError
from annlab.names import Status
from annlab.spec import RunSpec, TuneSpec, replaced, run_name
from annlab.tracking import liveness

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
BATCH_ATTR = "annlab.batch"  # a trial's batch: asked together, told before the next is asked
ASKER_ATTR = "annlab.asker"  # the process that asked the trial and tells the study its end
KEY_ATTR = "annlab.study_key"  # the study's own id, made with it: its parent's key
# TPE samples at random until this many trials have ended: fewer or more reached the grid's
# best about as often on the tuning benchmark, this count a little more (docs/tuning.md).
TPE_STARTUP_TRIALS = 6
SETTLE_SECONDS = 10.0  # how long an interrupted study waits for its jobs to close their runs


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

def storage(url: str, made: bool = False) -> RDBStorage:
    """Optuna's database storage, with the heartbeat that shows the trials of dead processes
    (:func:`fail_stale`). Its tables are made once, under a lock, by whichever process opens a
    new database first; ``made``: they exist (a trial's job, whose launcher opened the study),
    not looked for."""
    # Several processes write one sqlite study: wait for the lock rather than fail at 5 s.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None

    def make() -> RDBStorage:
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                          grace_period=GRACE_SECONDS)

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").split("?")[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        with tracking.file_lock(f"{path}.lock"):
            return make()
    if made or "studies" in databases.tables(url, "tune.storage"):
        return make()
    with databases.creating(url, "tune.storage"):
        return make()


def open_study(tune: TuneSpec, url: str) -> tuple[optuna.Study, bool]:
    """The study of this name in ``url``, created if new; returns (study, created)."""
    store = storage(url)
    try:
        return optuna.create_study(study_name=tune.study, storage=store,
                                   direction="minimize"), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=tune.study, storage=store), False


def sampler(tune: TuneSpec, index: int) -> optuna.samplers.BaseSampler:
    """The sampler of the study's ``index``-th sampled trial (retries do not count): made
    afresh, seeded from ``tune.seed`` and ``index``, so that what it proposes depends on the
    trials it sees and nothing else (not on what an earlier sampler drew, nor on which process
    asks). TPE models the parameters jointly and sees the trials still running as constant
    liars, the two settings Optuna gives for workers that ask while others run."""
    seed = int(hashlib.sha256(f"{tune.seed}:{index}".encode()).hexdigest()[:8], 16)
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                      n_startup_trials=TPE_STARTUP_TRIALS)


def sample_index(study: optuna.Study, number: int) -> int:
    """Trial ``number``'s place among the study's sampled trials: those numbered below it that
    are not a retry's copy. A copy takes a number but samples nothing, so a study resumed
    after an interrupt gives its next trial the index (and the seed) it would have had."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number < number
               and RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is None)


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


def ask_batch(study: optuna.Study, t: TuneSpec, size: int, asker: str,
              into: list[tuple[Trial, dict[str, Any]]]) -> None:
    """The next batch, appended to ``into`` one trial at a time (each given its values before
    the next is asked, so that the next one's sampler sees it): up to ``size`` trials within
    the budget. Copies of interrupted trials, waiting to run again with their values, make a
    batch of their own, as they were asked; otherwise each new trial is sampled by
    :func:`sampler` and belongs to batch ``sample index // size``."""
    retrying = bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    while len(into) < size:
        if retrying and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            break
        if not retrying and remaining(study, t.n_trials) <= 0:
            break
        trial = study.ask()  # a waiting copy if there is one
        if _has_heartbeat(study):  # from now: an asker lost before its first renewal shows
            study._storage.record_heartbeat(trial_id(trial))
        if not claim(study, trial, t.n_trials):
            break
        if RetryHeartbeatStaleTrialCallback.retried_trial_number(_frozen(study, trial)) is None:
            index = sample_index(study, trial.number)
            study.sampler = sampler(t, index)
            trial.set_user_attr(BATCH_ATTR, index // size)
        trial.set_user_attr(ASKER_ATTR, asker)
        into.append((trial, suggest(trial, t)))  # a copy's values are its own already


# -- pruning ---------------------------------------------------------------------------------

class EarlierBatches(BasePruner):
    """One of Optuna's pruners that compare trials (median, successive halving), shown only
    the trials of earlier batches: they had all ended when the trial's batch was asked, so
    its decisions do not depend on how far the other trials of its batch have got. (The first
    batch is never pruned.)"""

    def __init__(self, pruner: BasePruner):
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.pruner.prune(_Earlier(study, trial.user_attrs.get(BATCH_ATTR, 0)), trial)


class _Earlier:
    """What an Optuna pruner reads of a study, limited to the trials of batches before
    ``batch`` (trials of no batch, asked before studies had them, are not shown)."""

    def __init__(self, study: optuna.Study, batch: int):
        self._study, self._batch = study, batch

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states)
                if t.user_attrs.get(BATCH_ATTR, self._batch) < self._batch]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    @property
    def direction(self) -> optuna.study.StudyDirection:
        return self._study.direction

    @property
    def directions(self) -> list[optuna.study.StudyDirection]:
        return self._study.directions

    @property
    def _storage(self):
        """Successive halving records a trial's value at each rung it reaches here."""
        return self._study._storage


def pruner(tune: TuneSpec, n_classes: int = 2) -> BasePruner:
    """The configured pruner (a pruner lives in the process that asks it, not in the storage:
    each trial's job builds its own). ``threshold`` stops a trial whose validation
    misclassification, at a report from ``warmup_epochs`` on, is no better than a guess among
    ``n_classes`` (1 - 1/n_classes or worse): it has learnt nothing. It reads the trial's own
    curve only, so it decides the same under any schedule. ``median`` and
    ``successive_halving`` compare the trial with those of earlier batches
    (:class:`EarlierBatches`)."""
    p = tune.pruner
    if p.name == "none":
        return optuna.pruners.NopPruner()
    if p.name == "threshold":  # `value > upper` prunes: a guess's rate, as a count rounds it
        return optuna.pruners.ThresholdPruner(upper=1 - 1 / n_classes - 1e-9,
                                              n_warmup_steps=p.warmup_epochs)
    if p.name == "median":
        return EarlierBatches(optuna.pruners.MedianPruner(
            n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs,
            interval_steps=1))
    return EarlierBatches(optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(p.warmup_epochs, 1), reduction_factor=p.reduction_factor))


# -- the two records of a trial ---------------------------------------------------------------

def retry(study: optuna.Study, trial_number: int) -> None:
    """Fail a trial that was interrupted and, if it had been given values, ask it again with
    them (a WAITING copy). Only one of several workers settling it at once fails it and makes
    the copy, as Optuna's own stale-trial check does."""
    frozen = study.get_trials(deepcopy=False)[trial_number]
    if frozen.state != TrialState.RUNNING:
        return
    try:
        failed = study._storage.set_trial_state_values(trial_id(frozen), state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:  # ended meanwhile by another worker
        return
    if failed and frozen.params:
        RetryHeartbeatStaleTrialCallback()(study, frozen)


def orphans(study: optuna.Study) -> list[FrozenTrial]:
    """RUNNING trials whose asking process, on this machine, is gone: nobody will tell the
    study how they ended. (Those asked on other machines are settled once their heartbeat
    is silent: :func:`fail_stale`.)"""
    found = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        asker = liveness.ProcessId.parse(t.user_attrs.get(ASKER_ATTR, ""))
        if asker is not None and asker.alive() is False:
            found.append(t)
    return found


def trial_runs(experiment: tracking.Experiment, parent_run_id: str) -> dict[int, tracking.Record]:
    """The study's trial runs by trial number."""
    return {int(r.tags[names.TRIAL]): r for r in experiment.children(parent_run_id)
            if names.TRIAL in r.tags}


def settle(study: optuna.Study, experiment: tracking.Experiment, parent_run_id: str,
           trials: Iterable[Trial | FrozenTrial], wait: float = 0.0) -> list[int]:
    """Make each of ``trials`` that is still RUNNING in the study agree with its run, once its
    job is over (waiting up to ``wait`` seconds for jobs that still write their runs): a
    FINISHED run makes the trial COMPLETE with the run's final validation misclassification,
    or PRUNED if the run was; a FAILED run (its config fails: it diverged) makes it FAIL, as
    when the study is told so directly; otherwise (KILLED, no run, or a run whose process is
    gone, which is closed KILLED first) the trial is failed and asked again with the same
    values. Returns the numbers of the trials left RUNNING, their jobs still running: the next
    command settles them."""
    numbers = {t.number for t in trials}
    deadline = time.monotonic() + wait
    while True:
        runs = trial_runs(experiment, parent_run_id)
        open_ = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                 if t.number in numbers]
        live = {t.number for t in open_ if (r := runs.get(t.number)) is not None
                and r.status == Status.RUNNING and liveness.abandoned(r.tags, time.time()) is None}
        if not live or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    for t in open_:
        run = runs.get(t.number)
        if t.number in live:
            continue
        if run is not None and run.status == Status.RUNNING:
            tracking.Run(experiment.store, run.run_id).end(
                Status.KILLED, f"{liveness.abandoned(run.tags, time.time())}; its trial "
                "is asked again")
        if run is not None and run.status in (Status.FINISHED, Status.FAILED):
            _told(study, t, run.run_id, run.status, run.pruned_at, run.metrics.get(OBJECTIVE))
        else:
            retry(study, t.number)
    return sorted(live)


def fail_stale(study: optuna.Study, experiment: tracking.Experiment, parent_run_id: str
               ) -> None:
    """The RUNNING trials whose heartbeat stopped (their asking process is gone, on any
    machine) settled from their runs, as this machine's :func:`orphans` are: one whose run
    finished before its asker died is told so, not run again; one whose run was killed, or
    that has none, is failed and asked again; one whose job still writes its run is left to
    the next command, which finds the run ended (or its writer gone)."""
    if _has_heartbeat(study) and (stale := set(study._storage._get_stale_trial_ids(
            study._study_id))):
        settle(study, experiment, parent_run_id,
               [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if trial_id(t) in stale])


@contextlib.contextmanager
def beating(study: optuna.Study, trials: Callable[[], Sequence[Trial]]) -> Iterator[None]:
    """While inside, renew the heartbeat of ``trials()`` (the batch under way) from a daemon
    thread, as ``Study.optimize`` does for its trials: a trial whose job has ended is alive
    as long as the process that will tell the study how it ended."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            for trial in list(trials()):
                with contextlib.suppress(Exception):  # a missed beat is no failure
                    study._storage.record_heartbeat(trial_id(trial))

    thread = threading.Thread(target=beat, daemon=True, name="trial-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()


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
    launched: list[Any] = []
    asked: list[tuple[Trial, dict[str, Any]]] = []  # the batch under way, until told
    asker = str(liveness.ProcessId.current())

    def others_run_trials() -> bool:
        """Stopped early: the parent stays open while trials run (other workers', or a job
        of this one still closing its run)."""
        return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    name = f"study-{t.study}"
    with multirun.launching(experiment, lambda: _parent(experiment, study, created, t, url,
                                                           base.data.label),
                            name, "study", "finished trials count, interrupted ones are asked "
                            "again", keep_parent=others_run_trials) as (parent, _):
        with interrupts.held():  # what a process that died left: its ended jobs, its trials
            settle(study, experiment, parent.run_id, orphans(study))
            fail_stale(study, experiment, parent.run_id)
        print(f"{'starting' if created else 'joining'} study {t.study!r} ({url}): "
              f"{t.n_trials} trials in all, {remaining(study, t.n_trials)} to ask; parent run "
              f"{name} ({parent.run_id})", flush=True)
        ended = len(study.get_trials(deepcopy=False, states=ENDED))
        with (multirun.reporting(experiment, parent, t.n_trials, ended, width=44),
              beating(study, lambda: [trial for trial, _ in asked])):
            try:
                while True:
                    with interrupts.held():
                        ask_batch(study, t, batch, asker, asked)
                        jobs = [_job(point, trial, values, base, parent, url)
                                for trial, values in asked]
                    if not asked:
                        break
                    returns = launch(jobs, asked[0][0].number)
                    with interrupts.held():
                        for (trial, _), ret in zip(asked, returns):
                            _tell(study, trial, ret)
                        asked.clear()
                        fail_stale(study, experiment, parent.run_id)  # a worker lost meanwhile
                    launched.append(returns)
            except BaseException:
                # Stopped: each trial under way ends as its run did, once its job is over.
                with interrupts.held():
                    settle(study, experiment, parent.run_id, [trial for trial, _ in asked],
                           SETTLE_SECONDS)
                raise
        experiment.store.check_reachable("the study's summary is not written; rerun the same "
                                         "command once it answers", patient=True)
        from annlab import study_report  # its figures: not before the trials start

        study_report.write(experiment, study, parent, name, t, base.train.epochs,
                           base.data.split_sizes()[1], out)
    return launched


def _parent(experiment: tracking.Experiment, study: optuna.Study, created: bool, t: TuneSpec,
            url: str, dataset: str) -> tuple[tracking.Run, bool]:
    """The study's one parent run: made by the process that created the study, found by the
    others once it has named it in the study's user attribute. A study made anew under the
    same name and storage (its database deleted) gets a parent of its own, not the earlier
    study's: its key holds the study's own id."""
    if created:
        study.set_user_attr(KEY_ATTR, uuid.uuid4().hex)
    else:  # the creating worker is making it
        deadline = time.monotonic() + 120
        while PARENT_ATTR not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.5)
    key = {names.STUDY: t.study, names.STUDY_STORAGE: url}
    if KEY_ATTR in (attrs := study.user_attrs):  # studies made before it was kept have none
        key[names.STUDY_KEY] = attrs[KEY_ATTR]
    parent, resumed = experiment.parent_run(key, f"study-{t.study}", "pipelines/run.py",
                                            {names.DATASET: dataset})
    study.set_user_attr(PARENT_ATTR, parent.run_id)
    return parent, resumed


def _job(point: list[str], trial: Trial, values: dict[str, Any], base: RunSpec,
         parent: tracking.Run, url: str) -> list[str]:
    """The trial's job: the study's point, its sampled values, which trial it is; named by its
    values (floats to 3 significant digits)."""
    named = base.config
    for key, value in values.items():  # one at a time: replaced() keeps one key per section
        named = replaced(named, {key: float(f"{value:.3g}") if isinstance(value, float)
                                 else value})
    label = f"trial-{trial.number}-" + run_name(named, base.config)
    return multirun.job_overrides(
        [*point, *(f"{k}={v}" for k, v in values.items()), f"tune.trial={trial.number}",
         f"tune.trial_id={trial_id(trial)}", f"tune.storage={multirun.quoted(url)}"],
        parent, base.tracking.uri, label)


def _tell(study: optuna.Study, trial: Trial, ret) -> None:
    """What the trial's job reported: a value, pruned, or failed (its run says why). A trial
    another process has ended meanwhile (failed as stale) is left as it is."""
    if _frozen(study, trial).state.is_finished():
        return
    try:
        result = ret.return_value
    except Exception:  # the job itself raised: recorded as FAILED by its run
        result = {"status": Status.FAILED}
    _told(study, trial, result.get("run_id"), result.get("status"), result.get("pruned_at"),
          result.get("value"))


def _told(study: optuna.Study, trial: Trial | FrozenTrial, run_id: str | None, status,
          pruned_at: int | None, value: float | None) -> None:
    """Tell the study how the trial's run ended: FINISHED, its value (or pruned); anything
    else, failed. The trial names its run (the run names it: annlab.trial)."""
    if run_id:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # told meanwhile
            Trial(study, trial_id(trial)).set_user_attr(RUN_ATTR, run_id)
    if status != Status.FINISHED:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    elif pruned_at is not None:
        study.tell(trial.number, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        study.tell(trial.number, value, skip_if_finished=True)


# -- Optuna's private attributes, read here only ---------------------------------------------

def _has_heartbeat(study: optuna.Study) -> bool:
    """Whether the study's storage keeps trials' heartbeats (a database's; not in memory)."""
    return getattr(study._storage, "get_heartbeat_interval", lambda: None)() is not None


def trial_id(trial: Trial | FrozenTrial) -> int:
    """The trial's id in its storage: what reopens it in another process."""
    return trial._trial_id


def _frozen(study: optuna.Study, trial: Trial) -> FrozenTrial:
    """The trial as the storage has it now (its state, and whether it is a retry's copy)."""
    return study._storage.get_trial(trial_id(trial))


# -- inside a trial's job --------------------------------------------------------------------

class Ended(AnnlabError):
    """A trial's job whose trial the study has already ended (failed after an interrupt)."""


class Reporter:
    """A training job's epoch callback: reports the validation misclassification to its trial
    every ``report_every`` epochs and asks the pruner; returns True to stop (pruned). A job
    whose trial the study has ended (failed after an interrupt, and asked again) does not run:
    its run would disagree with its trial. Its storage calls are not cut in two by a signal
    (:func:`annlab.interrupts.held`): one that lands inside a transaction would leave the
    database locked for the study's own tell."""

    def __init__(self, tune: TuneSpec):
        with interrupts.held():
            self.study = optuna.load_study(study_name=tune.study,
                                           storage=storage(tune.storage, made=True))
            self.trial = Trial(self.study, tune.trial_id)
            self._check_running()
        self.tune, self.every, self.beat, self.pruning = tune, tune.report_every, 0.0, False

    def _check_running(self) -> None:
        state = _frozen(self.study, self.trial).state
        if state != TrialState.RUNNING:
            raise Ended(f"trial {self.trial.number} of study {self.study.study_name!r} is "
                        f"{state.name}: the study ended it (interrupted?) and asks it again")

    def __call__(self, model) -> bool:
        now = time.monotonic()
        epoch, last = model.n_iter_, model.n_iter_ == model.epochs
        if epoch == 0 or (now - self.beat < HEARTBEAT_SECONDS and epoch % self.every
                          and not last):
            return False
        with interrupts.held():
            if now - self.beat >= HEARTBEAT_SECONDS:  # what Study.optimize does for its trials
                self.study._storage.record_heartbeat(trial_id(self.trial))
                self.beat = now
            if epoch % self.every:
                if last:  # a run that ends without a report: its trial must still be open
                    self._check_running()
                return False
            if not self.pruning:  # a guess's rate depends on the classes the model learns
                self.study.pruner, self.pruning = pruner(self.tune, len(model.classes_)), True
            try:
                self.trial.report(model.history_[OBJECTIVE][-1], epoch)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._check_running()
                raise
            return self.trial.should_prune()
