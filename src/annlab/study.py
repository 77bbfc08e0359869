"""`make tune`: an Optuna study driven by ask-and-tell, each trial a job and a child run.

:func:`run` checks nothing itself (the sweeper has checked the config and :func:`check_space`),
opens the study in Optuna's own database (created, or resumed by name; never MLflow's: both keep
an ``alembic_version`` table) and the study's parent run, then asks the sampler for as many
trials as the launcher runs at once, launches them, and tells the study how each ended: its
final validation misclassification, or pruned. Trials prune themselves from their validation
curves (:class:`Reporter`). Several processes started with the same study name and storage
share it: together they run exactly ``tune.n_trials`` trials (see :func:`claim`); a trial whose
process died is failed by Optuna's heartbeat and asked again, never counted twice; the last
worker to finish writes the summary onto the parent.

This is annlab's one adapter to Optuna: the two private attributes it reads (a trial's storage
id, to reopen the trial in its job; the study's storage, to renew a trial's heartbeat as
``Study.optimize`` does) are read here only, pinned by tests/unit/test_study.py.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import Trial, TrialState

from annlab import databases, interrupts, multirun, names, tracking
from annlab.config import ConfigError, run_name
from annlab.databases import redact
from annlab.errors import AnnlabError
from annlab.names import Status
from annlab.rules import RULES

optuna.logging.set_verbosity(optuna.logging.WARNING)
# The heartbeat and its retry callback are marked experimental; they are Optuna's own way to
# fail and re-ask the trials of dead processes.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with")

OBJECTIVE = "val_misclassification"  # the final validation misclassification, minimised
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "successive_halving")
SPACE_TYPES = ("categorical", "int", "float")
SPACE_KEYS = {"categorical": ("type", "choices"), "int": ("type", "low", "high", "log"),
              "float": ("type", "low", "high", "log")}
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60  # a RUNNING trial silent this long belongs to a dead process
CLAIMED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
ENDED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS_ATTR = "annlab.surplus"
PARENT_ATTR = "annlab.mlflow_parent_run_id"  # the study's user attribute naming its MLflow run
RUN_ATTR = "annlab.mlflow_run_id"  # a trial's user attribute naming its MLflow run
STORE_ATTR = "annlab.tracking_store"  # ... the tracking store its trials are tracked in
EXPERIMENT_ATTR = "annlab.experiment"  # ... and the experiment


# -- the config ------------------------------------------------------------------------------

def space(tune: DictConfig) -> dict[str, DictConfig]:
    """The search space by dotted config key (``train.learning_rate``; ``seed`` for a
    top-level key, given without a section)."""
    found = {}
    for name, node in tune.space.items():
        if OmegaConf.is_dict(node) and "type" in node:
            found[name] = node
        else:
            found |= {f"{name}.{key}": p for key, p in node.items()}
    return found


def validate(tune: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first tune key that cannot drive a study."""
    def require(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"tune.{key}", value, allowed)

    require(bool(tune.study), "study", tune.study, "a non-empty study name")
    require(tune.n_trials >= 1, "n_trials", tune.n_trials, "an integer >= 1")
    require(tune.report_every >= 1, "report_every", tune.report_every, "an integer >= 1")
    require(tune.sampler in SAMPLERS, "sampler", tune.sampler, " | ".join(SAMPLERS))
    require(tune.pruner.name in PRUNERS, "pruner.name", tune.pruner.name, " | ".join(PRUNERS))
    require(tune.pruner.warmup_epochs >= 0, "pruner.warmup_epochs", tune.pruner.warmup_epochs,
            "an integer >= 0")
    require(tune.pruner.startup_trials >= 0, "pruner.startup_trials",
            tune.pruner.startup_trials, "an integer >= 0")
    require(tune.pruner.reduction_factor >= 2, "pruner.reduction_factor",
            tune.pruner.reduction_factor, "an integer >= 2")
    require(len(space(tune)) > 0, "space", {}, "at least one key to search")
    for key, p in space(tune).items():
        where = f"space.{key}"
        require(OmegaConf.is_dict(p), where, _plain(p), "a mapping such as {type: float, "
                "low: 0.01, high: 10, log: true} or {type: categorical, choices: [a, b]}")
        kind = p.get("type")
        require(kind in SPACE_TYPES, f"{where}.type", kind, " | ".join(SPACE_TYPES))
        known = SPACE_KEYS[kind]
        extra = sorted(set(p) - set(known))
        require(not extra, f"{where}.{extra[0] if extra else ''}", _plain(p.get(extra[0]))
                if extra else None, f"the keys of a {kind} parameter: {', '.join(known)}")
        if kind == "categorical":
            require(bool(p.get("choices")), f"{where}.choices", _plain(p.get("choices")),
                    "a non-empty list of values")
            continue
        low, high = p.get("low"), p.get("high")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        require(numbers and low < high, f"{where}.low/high", [low, high],
                "a range of numbers with low < high")
        require(not p.get("log") or low > 0, f"{where}.low", low, "a number > 0 (log scale)")
        if kind == "int":
            require(float(low).is_integer() and float(high).is_integer(),
                    f"{where}.low/high", [low, high], "integers for an int range")


def check_space(base: DictConfig) -> None:
    """Every searched key exists and both ends of its range (each choice) obey its rule."""
    rules = {rule.key: rule for rule in RULES}
    for key, p in space(base.tune).items():
        if OmegaConf.select(base, key, default="missing") == "missing":
            raise ConfigError(f"tune.space.{key}", None, "keys of the config to search, such "
                              "as model.hidden_nodes or train.learning_rate")
        ends = list(p.choices) if p.type == "categorical" else [p.low, p.high]
        if p.type == "int":
            ends = [int(v) for v in ends]
        for value in ends:
            rule = rules.get(key)
            if rule is not None and not rule.ok(value):
                raise ConfigError(f"tune.space.{key}", value, f"values {key} allows: "
                                  f"{rule.allowed}")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


OWN_DATABASE = ("a database of Optuna's own, never MLflow's (both keep an alembic_version "
                "table): sqlite:///<path>, or postgresql+psycopg://<user>@<host>:<port>/"
                "<database> with a database of its own beside MLflow's")


def storage_url(tune: DictConfig, tracking_uri: str) -> str:
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


def open_study(tune: DictConfig, url: str) -> tuple[optuna.Study, bool]:
    """The study of this name in ``url``, created if new; returns (study, created)."""
    store = storage(url)
    try:
        return optuna.create_study(study_name=tune.study, storage=store,
                                   direction="minimize"), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=tune.study, storage=store), False


def sampler_and_pruner(tune: DictConfig, study: optuna.Study, created: bool = True) -> None:
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


def pruner(tune: DictConfig) -> optuna.pruners.BasePruner:
    """The configured pruner (a study's pruner lives in its process, not in the storage: the
    trials' jobs build the same one)."""
    p = tune.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials,
                                           n_warmup_steps=p.warmup_epochs, interval_steps=1)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(p.warmup_epochs, 1),
                                                  reduction_factor=p.reduction_factor)


def describe_param(p: DictConfig) -> str:
    """``tanh | sigmoid | relu``, ``int 2..16``, ``float 0.01..10 (log)``."""
    if p.type == "categorical":
        return " | ".join(map(str, p.choices))
    return f"{p.type} {p.low:g}..{p.high:g}" + (" (log)" if p.get("log") else "")


def suggest(trial: Trial, tune: DictConfig) -> dict[str, Any]:
    """The trial's values for every key of the search space."""
    values = {}
    for key, p in space(tune).items():
        if p.type == "categorical":
            values[key] = trial.suggest_categorical(key, list(p.choices))
        elif p.type == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high),
                                            log=bool(p.get("log")))
        else:
            values[key] = trial.suggest_float(key, p.low, p.high, log=bool(p.get("log")))
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


def run(base: DictConfig, point: list[str], uri: str, url: str, batch: int, launch: Launch,
        out: Path) -> list[Any]:
    """Run what is left of the study ``base.tune`` describes: ``batch`` trials at a time, each
    the job ``point`` plus its sampled values, through ``launch``; the summary goes under
    ``out`` and onto the parent once no trial runs anywhere."""
    t = base.tune
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
    with multirun.launching(experiment, lambda: _parent(experiment, study, created, t, url),
                            name, "study", "finished trials count, interrupted ones are asked "
                            "again", keep_parent=others_run_trials) as (parent, _):
        print(f"{'starting' if created else 'joining'} study {t.study!r} ({url}): "
              f"{t.n_trials} trials in all, {remaining(study, t.n_trials)} to ask; parent run "
              f"{name} ({parent.run_id})", flush=True)
        ended = len(study.get_trials(deepcopy=False, states=ENDED))
        with multirun.reporting(experiment, parent, t.n_trials, ended):
            while True:
                with interrupts.held():
                    asked = _ask(study, t, batch)
                    jobs = [_job(point, trial, base, parent, uri, url) for trial in asked]
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
        summarise_if_done(experiment, study, parent, name, t, base.train.epochs, out)
    return launched


def _parent(experiment: tracking.Experiment, study: optuna.Study, created: bool, t: DictConfig,
            url: str) -> tuple[tracking.Run, bool]:
    """The study's one parent run: made by the process that created the study, found by the
    others through the study's user attribute."""
    if created or PARENT_ATTR in study.user_attrs:
        parent, resumed = experiment.parent_run({names.STUDY: t.study, names.STUDY_STORAGE: url},
                                                f"study-{t.study}", "pipelines/tune.py")
        study.set_user_attr(PARENT_ATTR, parent.run_id)
        return parent, resumed
    deadline = time.monotonic() + 120  # the creating worker is making it
    while PARENT_ATTR not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)
    return _parent(experiment, study, True, t, url)


def _ask(study: optuna.Study, t: DictConfig, batch: int) -> list[Trial]:
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


def _job(point: list[str], trial: Trial, base: DictConfig, parent: tracking.Run, uri: str,
         url: str) -> list[str]:
    values = suggest(trial, base.tune)
    shown = {k: f"{v:.3g}" if isinstance(v, float) else v for k, v in values.items()}
    label = f"trial-{trial.number}-" + run_name(OmegaConf.merge(
        base, OmegaConf.from_dotlist([f"{k}={v}" for k, v in shown.items()])), base)
    return multirun.job_overrides(
        [*point, *(f"{k}={v}" for k, v in values.items()), f"tune.trial={trial.number}",
         f"tune.trial_id={trial_id(trial)}", f"tune.storage={multirun.quoted(url)}"],
        parent, uri, label)


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


def summarise_if_done(experiment: tracking.Experiment, study: optuna.Study,
                      parent: tracking.Run, parent_name: str, t: DictConfig, epochs: int,
                      out: Path) -> None:
    """Once no trial runs anywhere: trials.csv, Optuna's figures and the best trial onto the
    parent, which ends FINISHED. Otherwise leave it to the last worker."""
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        parent.share()
        print(f"this worker is done; other workers still run trials of {t.study!r}, and the "
              f"last to finish writes the summary onto {parent_name}", flush=True)
        return
    experiment.close_stale_children(parent.run_id, "its job ended without closing the run")
    runs = {int(r.tags[names.TRIAL]): r.run_id for r in experiment.children(parent.run_id)
            if names.TRIAL in r.tags}
    table = trials_table(study, runs)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / names.TRIALS_FILE, index=False)
    parent.log_artifact(out / names.TRIALS_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        for path in figures(study, list(space(t)), epochs, Path(tmp)):
            parent.log_artifact(path, names.FIGURES_DIR)
    parent.log_params({f"tune.space.{k}": describe_param(v) for k, v in space(t).items()})
    done = table[table["state"] == "COMPLETE"]
    if len(done):
        best = done.loc[done["value"].idxmin()]
        best_name = next((r.run_name for r in experiment.children(parent.run_id)
                          if r.run_id == best["run_id"]), None)
        multirun.log_best(parent, best["value"], best["run_id"], best_name)
    pruned = (table["state"] == "PRUNED").sum()
    parent.set_note(
        f"Tuning study `{t.study}`: {len(table)} trials ({pruned} pruned, "
        f"{len(done)} complete) of an Optuna {t.sampler} search with a {t.pruner.name} pruner "
        f"(warm-up {t.pruner.warmup_epochs} epochs, a report every {t.report_every}), "
        "minimising the final validation misclassification. `trials.csv` has every trial; "
        "the figures are Optuna's."
        + (f"\n\nBest: **{best_name}**, validation misclassification {best['value']:g}; "
           f"reproduce it with `make reproduce RUN_ID={best['run_id']}`." if len(done) else ""))
    parent.end(Status.FINISHED)
    params = [c for c in table.columns if c in space(t)]
    shown = table[["trial", "state", "value", "pruned_at", *params]].sort_values("value")
    print("\n" + shown.head(10).to_string(index=False, na_rep="-"))
    print(f"\nstudy parent run {parent_name} ({parent.run_id}): {len(table)} trials, "
          f"{pruned} pruned; {names.TRIALS_FILE} and Optuna's figures on it; browse with "
          f"`make ui`; the trials alone: its page at #/experiments/{experiment.id}/runs?"
          f"workflowType=machine_learning&viewStateShareKey=annlab-study-{t.study}",
          flush=True)
    if len(done):
        print(tracking.register(experiment.store, best["run_id"]).line(), flush=True)


# -- inside a trial's job --------------------------------------------------------------------

def trial_id(trial: Trial) -> int:
    """The trial's id in its storage: what reopens it in another process."""
    return trial._trial_id


class Reporter:
    """A training job's epoch callback: reports the validation misclassification to its trial
    every ``report_every`` epochs and asks the pruner; returns True to stop (pruned). Its
    storage calls are not cut in two by a signal (:func:`annlab.interrupts.held`): one that
    lands inside a transaction would leave the database locked for the study's own tell."""

    def __init__(self, tune: DictConfig):
        with interrupts.held():
            self.study = optuna.load_study(study_name=tune.study, storage=storage(tune.storage),
                                           pruner=pruner(tune))
        self.trial = Trial(self.study, tune.trial_id)
        self.every, self.beat = tune.report_every, 0.0

    def __call__(self, model) -> bool:
        now = time.monotonic()
        epoch = model.n_iter_
        if now - self.beat < HEARTBEAT_SECONDS and epoch % self.every:
            return False
        with interrupts.held():
            if now - self.beat >= HEARTBEAT_SECONDS:  # what Study.optimize does for its trials
                self.study._storage.record_heartbeat(trial_id(self.trial))
                self.beat = now
            if epoch % self.every:
                return False
            self.trial.report(model.history_[OBJECTIVE][-1], epoch)
            return self.trial.should_prune()


# -- the study's summary ---------------------------------------------------------------------

def trials_table(study: optuna.Study, runs: Mapping[int, str]) -> Any:
    """Every trial run (surplus ones left out): params, value, state, pruned epoch, run id."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS_ATTR):
            continue
        pruned_at = max(t.intermediate_values) if (
            t.state == TrialState.PRUNED and t.intermediate_values) else None
        rows.append({"trial": t.number, **t.params, "value": t.value, "state": t.state.name,
                     "pruned_at": pruned_at, "run_id": runs.get(t.number)})
    return pd.DataFrame(rows).astype({"pruned_at": "Int64"}) if rows else pd.DataFrame(rows)


def figures(study: optuna.Study, keys: list[str], epochs: int, out_dir: Path) -> list[Path]:
    """The study's figures: best validation misclassification so far against epochs trained
    (every trial, pruned ones by the epochs they trained; ``epochs``: a complete trial's) and
    every trial across the searched ``keys`` (parallel coordinates); and Optuna's own: every
    trial's reported curve (pruned ones included), optimisation history and parameter
    importances (the complete trials, as Optuna draws them)."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    from annlab.plots import PNG_METADATA

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    plots: dict[str, Callable] = {"intermediate_values": vis.plot_intermediate_values,
                                  "optimization_history": vis.plot_optimization_history}
    if len(done) >= 2 and len({tuple(sorted(t.params.items())) for t in done}) >= 2:
        plots["param_importances"] = vis.plot_param_importances
    paths = [_best_so_far(study, epochs, out_dir / "best_so_far.png"),
             _parallel_coordinates(study, keys, out_dir / "parallel_coordinate.png")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fANOVA's and matplotlib's chatter
        for name, plot in plots.items():
            ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(10, 6)
            if name == "intermediate_values" and ax.get_legend() is not None:
                ax.get_legend().remove()  # a line per trial: the legend would cover them
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path, metadata=PNG_METADATA, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths


def epochs_trained(trial, epochs: int) -> int:
    """A trial's epochs: to its last report if pruned, else a complete trial's ``epochs``."""
    if trial.state == TrialState.PRUNED:
        return max(trial.intermediate_values, default=0)
    return int(trial.params.get("train.epochs", epochs))


def _last_value(trial) -> float | None:
    """A complete trial's value; a pruned one's last report."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    return trial.intermediate_values[max(trial.intermediate_values)] if (
        trial.intermediate_values) else None


def _best_so_far(study: optuna.Study, epochs: int, path: Path) -> Path:
    from matplotlib.figure import Figure

    from annlab.plots import PNG_METADATA

    trials = sorted(study.get_trials(deepcopy=False, states=ENDED), key=lambda t: t.number)
    spent, best, xs, ys, marks = 0, float("nan"), [0], [float("nan")], []
    for t in trials:
        spent += epochs_trained(t, epochs)
        if t.state == TrialState.COMPLETE and not t.value >= best:
            best = t.value
        xs.append(spent)
        ys.append(best)
        marks.append((spent, _last_value(t), t.state == TrialState.PRUNED))
    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.step(xs, ys, where="post", lw=2, color="C0", label="best complete trial so far")
    for pruned in (False, True):
        shown = [(x, y) for x, y, p in marks if p == pruned and y is not None]
        if shown:
            ax.scatter(*zip(*shown), s=28, label="pruned (last report)" if pruned else
                       "complete", facecolors="none" if pruned else "C1", edgecolors="C1")
    ax.set(xlim=(0, None), xlabel="epochs trained, all trials (pruned ones: to where they "
           "stopped)", ylabel="validation misclassification",
           title=f"Study {study.study_name}: {len(trials)} trials, best so far against their "
                 "epochs")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, metadata=PNG_METADATA)
    return path


def _parallel_coordinates(study: optuna.Study, space_keys: list[str], path: Path) -> Path:
    """Every ended trial across its parameters (categories in their order, log ranges on a log
    scale) to its value; pruned trials dashed, at their last report."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from annlab.plots import PNG_METADATA

    trials = [t for t in study.get_trials(deepcopy=False, states=ENDED)
              if _last_value(t) is not None]
    columns = [*space_keys, OBJECTIVE]

    def scale(key: str, values: list):
        if all(isinstance(v, str) for v in values):
            levels = list(dict.fromkeys(values))
            return [levels.index(v) / max(len(levels) - 1, 1) for v in values], levels
        log = key != OBJECTIVE and min(values) > 0 and max(values) / min(values) > 50
        x = np.log10(values) if log else np.asarray(values, float)
        span = float(x.max() - x.min()) or 1.0
        return list((x - x.min()) / span), [f"{min(values):.3g}", f"{max(values):.3g}"]

    table = {key: [t.params.get(key) if key != OBJECTIVE else _last_value(t) for t in trials]
             for key in columns}
    scaled = {key: scale(key, values) for key, values in table.items() if values}
    fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    cmap, values = colormaps["viridis_r"], table[OBJECTIVE]
    low, high = (min(values), max(values)) if values else (0, 1)
    for i, t in enumerate(trials):
        ys = [scaled[key][0][i] for key in columns]
        ax.plot(range(len(columns)), ys, color=cmap((values[i] - low) / ((high - low) or 1)),
                lw=1.5, alpha=0.9, ls="--" if t.state == TrialState.PRUNED else "-")
    for j, key in enumerate(columns):
        ax.axvline(j, color="grey", lw=0.8)
        labels = scaled[key][1] if key in scaled else []
        for k, label in enumerate(labels):
            ax.annotate(label, (j, k / max(len(labels) - 1, 1)), xytext=(7, 0),
                        textcoords="offset points", fontsize=10, va="center",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                              "alpha": 0.8})
    fig.colorbar(ScalarMappable(Normalize(low, high), cmap), ax=ax,
                 label="validation misclassification")
    ax.set(xticks=range(len(columns)), xticklabels=columns, yticks=[], xlim=(-0.2,
           len(columns) - 0.6), title=f"Study {study.study_name}: every trial "
           "(dashed: pruned, at its last report), coloured by validation misclassification")
    fig.savefig(path, metadata=PNG_METADATA)
    return path
