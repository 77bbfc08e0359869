"""`make tune`: an Optuna study driven by ask-and-tell, each trial a Hydra job and an MLflow run.

annlab's tuning sweeper (``hydra_plugins/annlab_sweeper.py``) hands the study to
:func:`run_study`. The launching process checks the config and the search space, opens the
study in Optuna's own database (created, or resumed by name) and the study's parent run, then
asks the sampler for as many trials as the launcher runs at once, launches them as Hydra jobs
(each gets its sampled values, its trial and the parent run in its overrides), and tells the
study how each ended: its final validation misclassification, or pruned. Trials prune
themselves from their validation curves (:class:`annlab.tune.Reporter`). Several processes
started with the same study name and storage share it: they run exactly ``tune.n_trials``
trials together; the last one to finish writes the summary onto the parent.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from annlab import names, tracking, tune
from annlab.config import ConfigError, run_name, validate
from annlab.names import Status
from annlab.rules import RULES
from pipelines import defer_interrupts, interruptible
from pipelines.sweep import (
    SIZE_ENV,
    check_cluster,
    close_children,
    expand,
    finish_warm_up,
    import_meanwhile,
    quoted,
    stop,
    stop_reason,
    warm_up,
)

PARENT_ATTR = "annlab.mlflow_parent_run_id"  # the study's user attribute naming its MLflow run


def check_space(base: DictConfig) -> None:
    """Every searched key exists and both ends of its range (each choice) obey its rule."""
    rules = {rule.key: rule for rule in RULES}
    for key, p in tune.space(base.tune).items():
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


def parallel(config: DictConfig) -> int:
    """Trials to run at once: the launcher's n_jobs (all cores for -1), else one per core."""
    n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    if n_jobs is not None and n_jobs > 0:
        return int(n_jobs)
    if OmegaConf.select(config, "hydra.launcher._target_", default="").endswith("BasicLauncher"):
        return 1
    return os.cpu_count() or 1


def run_study(sweeper, arguments: list[str]) -> list[Any]:
    config: DictConfig = sweeper.config
    defer_interrupts()  # while OmegaConf composes and checks the config
    points, swept = expand(arguments)
    if swept:
        sys.exit(f"error: {', '.join(swept)}: make tune samples tune.space, it does not grid "
                 "comma-separated values (that is make sweep)")
    base = sweeper.compose(points[0])
    warming = None
    try:
        validate(base)
        tune.validate(base.tune)
        check_space(base)
        uri = tracking.resolve_uri(base.tracking.uri, base.paths.store)
        url = tune.storage_url(base.tune, base.paths.study_store, uri)
        interruptible()
        check_cluster(config, uri)
        warming = warm_up(config, uri)
        experiment = tracking.open(uri, base.tracking.experiment)
        study, created = tune.open_study(base.tune, url)
        tune.fail_stale(study)
        tune.sampler_and_pruner(base.tune, study, created)
        parent, parent_name = _parent(experiment, study, created, base.tune, url)
    except BaseException as err:  # bad input, a store refused, a Ctrl-C: nothing launched yet
        finish_warm_up(warming)
        if isinstance(err, ConfigError | tracking.TrackingError):
            sys.exit(f"error: {err}")
        raise
    t = base.tune
    print(f"{'starting' if created else 'joining'} study {t.study!r} ({url}): {t.n_trials} "
          f"trials in all, {tune.remaining(study, t.n_trials)} to ask; parent run "
          f"{parent_name} ({parent.run_id})", flush=True)
    launched: list[Any] = []
    asked: list = []
    with tracking.interrupts() as received, parent.heartbeat():
        try:
            finish_warm_up(warming)
            import_meanwhile("matplotlib.pyplot", "optuna.visualization.matplotlib")
            while asked := _ask(study, t, parallel(config)):
                jobs = [_job(points[0], study, trial, base, parent, uri, url) for trial in asked]
                returns = sweeper.launch(jobs, first_index=asked[0].number)
                for trial, ret in zip(asked, returns):
                    _tell(study, trial, ret)
                launched.append(returns)
                asked = []
            experiment.store.check_reachable("the study's summary is not written; rerun the "
                                             "same command once it answers")
            summarise_if_done(experiment, study, parent, parent_name, t,
                              Path(config.hydra.sweep.dir) / "summary")
        except SystemExit:
            raise
        except tracking.TrackingError as err:  # the store went away: it says what is left
            sys.exit(f"error: {err}")
        except BaseException as err:
            _abandon(experiment, study, asked, parent, parent_name,
                     stop_reason(err, received, "study"))
    return launched


def _parent(experiment: tracking.Experiment, study, created: bool, t: DictConfig,
            url: str) -> tuple[tracking.Run, str]:
    """The study's one parent run: made by the process that created the study, found by the
    others through the study's user attribute."""
    name = f"study-{t.study}"
    if created or PARENT_ATTR in study.user_attrs:
        parent, _ = experiment.parent_run({names.STUDY: t.study, names.STUDY_STORAGE: url}, name,
                                          "pipelines/tune.py")
        study.set_user_attr(PARENT_ATTR, parent.run_id)
        return parent, name
    deadline = time.monotonic() + 120  # the creating worker is making it
    while PARENT_ATTR not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)
    return _parent(experiment, study, True, t, url)


def _ask(study, t: DictConfig, batch: int) -> list:
    """Up to ``batch`` trials within the study's budget (WAITING ones, asked again, first)."""
    asked = []
    while len(asked) < batch:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if tune.remaining(study, t.n_trials) <= 0 and not waiting:
            break
        trial = study.ask()
        if not tune.claim(study, trial, t.n_trials):
            break
        asked.append(trial)
    return asked


def _job(point: list[str], study, trial, base: DictConfig, parent: tracking.Run, uri: str,
         url: str) -> list[str]:
    values = tune.suggest(trial, base.tune)
    overrides = [f"{k}={v}" for k, v in values.items()]
    shown = {k: f"{v:.3g}" if isinstance(v, float) else v for k, v in values.items()}
    label = f"trial-{trial.number}-" + run_name(OmegaConf.merge(
        base, OmegaConf.from_dotlist([f"{k}={v}" for k, v in shown.items()])))
    return [*point, *overrides, f"tune.trial={trial.number}", f"tune.trial_id={trial._trial_id}",
            f"tune.storage={quoted(url)}", f"tracking.parent_run_id={parent.run_id}",
            f"tracking.uri={quoted(uri)}", f"tracking.run_name={quoted(label)}",
            f"+hydra.job.env_set.{SIZE_ENV}={base.tune.n_trials}"]


def _tell(study, trial, ret) -> None:
    """What the trial's job reported: a value, pruned, or failed (its run says why)."""
    try:
        result = ret.return_value
    except Exception:  # the job itself raised: recorded as FAILED by its run
        result = {"status": Status.FAILED}
    if result.get("status") != Status.FINISHED:
        study.tell(trial, state=TrialState.FAIL)
    elif result.get("pruned_at") is not None:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, result["value"])


def _abandon(experiment: tracking.Experiment, study, asked: list, parent: tracking.Run,
             parent_name: str, reason: str) -> None:
    """Interrupted: the trials under way are failed and asked again, their runs closed as
    KILLED; the parent too unless other workers still run trials."""
    for trial in asked:
        tune.retry(study, trial.number)
    lines = close_children(experiment, parent, reason, "study")
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        parent.share()
        lines.append(f"  (the parent {parent_name} stays open: other workers run trials)")
    else:
        parent.end(Status.KILLED, f"{reason} before the study's summary")
        lines.append(f"  {parent_name} ({parent.run_id}), the study's parent")
    stop(lines, "finished trials count, interrupted ones are asked again")


def summarise_if_done(experiment: tracking.Experiment, study, parent: tracking.Run,
                      parent_name: str, t: DictConfig, out: Path) -> None:
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
    table = tune.trials_table(study, runs)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / names.TRIALS_FILE, index=False)
    parent.log_artifact(out / names.TRIALS_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        for path in tune.figures(study, Path(tmp)):
            parent.log_artifact(path, names.FIGURES_DIR)
    parent.log_params({f"tune.space.{k}": tune.describe_param(v)
                       for k, v in tune.space(t).items()})
    done = table[table["state"] == "COMPLETE"]
    if len(done):
        best = done.loc[done["value"].idxmin()]
        best_name = next((r.run_name for r in experiment.children(parent.run_id)
                          if r.run_id == best["run_id"]), None)
        parent.log_metrics({names.BEST_VAL_MISCLASSIFICATION: best["value"]})
        parent.set_tags({names.BEST_RUN: best["run_id"], names.BEST_RUN_NAME: best_name})
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
    shown = table[["trial", "state", "value", "pruned_at"]].sort_values("value")
    print("\n" + shown.head(10).to_string(index=False, na_rep="-"))
    print(f"\nstudy parent run {parent_name} ({parent.run_id}): {len(table)} trials, "
          f"{pruned} pruned; {names.TRIALS_FILE} and Optuna's figures on it; browse with "
          "`make ui`", flush=True)
