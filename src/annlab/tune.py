"""Tuning with Optuna's ask-and-tell: the search space, the study, pruning from the curves.

Knows nothing of MLflow or Hydra. The study lives in Optuna's own database (never MLflow's:
both keep an ``alembic_version`` table). Several processes share a study by its name and
storage: together they run exactly ``tune.n_trials`` trials (see :func:`claim`); a trial whose
process died is failed by Optuna's heartbeat and asked again, never counted twice.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import Trial, TrialState

from annlab.config import ConfigError

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
SURPLUS_ATTR = "annlab.surplus"


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


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def storage_url(tune: DictConfig, default: str, tracking_uri: str) -> str:
    """``tune.storage`` or ``default`` (paths.study_store); refused if it is MLflow's."""
    url = tune.storage or default
    if url.split("?")[0] == tracking_uri.split("?")[0]:
        raise ConfigError("tune.storage", url, "a database of Optuna's own, not MLflow's "
                          "tracking store (both keep an alembic_version table)")
    return url


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
        from annlab.tracking import file_lock

        path = Path(url.removeprefix("sqlite:///").split("?")[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(f"{path}.lock"):
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


# -- inside a trial's job --------------------------------------------------------------------

class Reporter:
    """A training job's epoch callback: reports the validation misclassification to its trial
    every ``report_every`` epochs and asks the pruner; returns True to stop (pruned)."""

    def __init__(self, tune: DictConfig, url: str):
        self.study = optuna.load_study(study_name=tune.study, storage=storage(url),
                                       pruner=pruner(tune))
        self.trial = Trial(self.study, tune.trial_id)
        self.every, self.beat = tune.report_every, 0.0

    def __call__(self, model) -> bool:
        now = time.monotonic()
        if now - self.beat >= HEARTBEAT_SECONDS:  # what Study.optimize does for its trials
            self.study._storage.record_heartbeat(self.trial._trial_id)
            self.beat = now
        epoch = model.n_iter_
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


def figures(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optuna's matplotlib figures: optimisation history, parameter importances, parallel
    coordinates (those the finished trials allow)."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    from annlab.plots import PNG_METADATA

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    plots: dict[str, Callable] = {"optimization_history": vis.plot_optimization_history,
                                  "parallel_coordinate": vis.plot_parallel_coordinate}
    if len(done) >= 2 and len({tuple(sorted(t.params.items())) for t in done}) >= 2:
        plots["param_importances"] = vis.plot_param_importances
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fANOVA's and matplotlib's chatter
        for name, plot in plots.items():
            ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path, metadata=PNG_METADATA, dpi=90)
            plt.close(fig)
            paths.append(path)
    return paths
