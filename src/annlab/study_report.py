"""A study's summary on its parent run: the table of its trials and the figures that compare them
(:func:`write`), written once no trial runs anywhere.

The figures that are annlab's (best so far against epochs trained, parallel coordinates) are
drawn by :mod:`annlab.plots` from the plain rows built here; Optuna's own (every trial's
reported curve, optimisation history, parameter importances) by Optuna. Each says in its title
how many trials it rests on, complete and pruned.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from annlab import multirun, names, plots, tracking
from annlab.names import Status
from annlab.spec import TuneSpec
from annlab.sweep_report import digits

OBJECTIVE = "val_misclassification"
ENDED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS_ATTR = "annlab.surplus"  # a trial asked past the budget and not run


def write(experiment: tracking.Experiment, study: optuna.Study, parent: tracking.Run,
          parent_name: str, t: TuneSpec, epochs: int, n_val: int, out: Path) -> None:
    """Once no trial runs anywhere: trials.csv, the figures and the best trial onto the parent,
    which ends FINISHED; the best trial's model is registered. Otherwise leave it to the last
    worker."""
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        parent.share()
        print(f"this worker is done; other workers still run trials of {t.study!r}, and the "
              f"last to finish writes the summary onto {parent_name}", flush=True)
        return
    experiment.close_stale_children(parent.run_id, "its job ended without closing the run")
    children = experiment.children(parent.run_id)
    runs = {int(r.tags[names.TRIAL]): r.run_id for r in children if names.TRIAL in r.tags}
    table = trials_table(study, runs)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / names.TRIALS_FILE, index=False)
    parent.log_artifact(out / names.TRIALS_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        for path in figures(study, list(t.space), epochs, Path(tmp)):
            parent.log_artifact(path, names.FIGURES_DIR)
    parent.log_params({f"tune.space.{k}": describe_param(v) for k, v in t.space.items()})
    done = table[table["state"] == "COMPLETE"]
    if len(done):
        best = done.loc[done["value"].idxmin()]
        best_name = next((r.run_name for r in children if r.run_id == best["run_id"]), None)
        multirun.log_best(parent, {t.study: (best["value"], best["run_id"], best_name)})
    pruned = (table["state"] == "PRUNED").sum()
    parent.set_note(
        f"Tuning study `{t.study}`: {len(table)} trials ({pruned} pruned, "
        f"{len(done)} complete) of an Optuna {t.sampler} search with a {t.pruner.name} pruner "
        f"(warm-up {t.pruner.warmup_epochs} epochs, a report every {t.report_every}), "
        "minimising the final validation misclassification. `trials.csv` has every trial."
        + (f"\n\nBest: **[{best_name}](#/experiments/{experiment.id}/runs/{best['run_id']})**,"
           f" validation misclassification {best['value']:g}; "
           f"reproduce it with `make reproduce RUN_ID={best['run_id']}`." if len(done) else ""))
    parent.end(Status.FINISHED)
    print("\n" + printed(table, list(t.space), n_val))
    print(f"\nstudy parent run {parent_name} ({parent.run_id}): {len(table)} trials, "
          f"{pruned} pruned; {names.TRIALS_FILE} and the study's figures on it; browse with "
          f"`make ui`; the trials alone: its page at #/experiments/{experiment.id}/runs?"
          f"workflowType=machine_learning&viewStateShareKey=annlab-study-{t.study}",
          flush=True)
    if len(done):
        print(tracking.register(experiment.store, best["run_id"]).line(), flush=True)


def printed(table: pd.DataFrame, keys: list[str], n_val: int) -> str:
    """The ten best trials, values to the digits validation resolves, floats to 3 significant
    digits, a dash where a trial has no value."""
    places = digits(n_val)
    shown = table[["trial", "state", "value", "pruned_at", *[k for k in keys if k in table]]]
    shown = shown.sort_values("value").head(10).astype(object)
    shown["value"] = [f"{v:.{places}f}" if pd.notna(v) else "-" for v in shown["value"]]
    shown["pruned_at"] = [str(int(v)) if pd.notna(v) else "-" for v in shown["pruned_at"]]
    for key in keys:
        if key in shown:
            shown[key] = [f"{v:.3g}" if isinstance(v, float) else v for v in shown[key]]
    return shown.to_string(index=False)


def describe_param(p: Mapping) -> str:
    """``tanh | sigmoid | relu``, ``int 2..16``, ``float 0.01..10 (log)``."""
    if p["type"] == "categorical":
        return " | ".join(map(str, p["choices"]))
    return f"{p['type']} {p['low']:g}..{p['high']:g}" + (" (log)" if p.get("log") else "")


def trials_table(study: optuna.Study, runs: Mapping[int, str]) -> pd.DataFrame:
    """Every trial run (surplus ones left out): params, value, state, pruned epoch, run id."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS_ATTR):
            continue
        pruned_at = max(t.intermediate_values) if (
            t.state == TrialState.PRUNED and t.intermediate_values) else None
        rows.append({"trial": t.number, **t.params, "value": t.value, "state": t.state.name,
                     "pruned_at": pruned_at, "run_id": runs.get(t.number)})
    return pd.DataFrame(rows).astype({"pruned_at": "Int64"}) if rows else pd.DataFrame(rows)


def epochs_trained(trial: FrozenTrial, epochs: int) -> int:
    """A trial's epochs: to its last report if pruned, else a complete trial's ``epochs``."""
    if trial.state == TrialState.PRUNED:
        return max(trial.intermediate_values, default=0)
    return int(trial.params.get("train.epochs", epochs))


def last_value(trial: FrozenTrial) -> float | None:
    """A complete trial's value; a pruned one's last report."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    return trial.intermediate_values[max(trial.intermediate_values)] if (
        trial.intermediate_values) else None


def rests_on(trials: Sequence[FrozenTrial]) -> str:
    """``10 trials: 8 complete, 2 pruned``: what a figure is drawn from."""
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    return (f"{len(trials)} trial{'s' * (len(trials) != 1)}: {len(trials) - pruned} complete, "
            f"{pruned} pruned")


def importance_study(study: optuna.Study) -> optuna.Study | None:
    """The study as the importance figure reads it: every ended trial, a pruned one at its
    last report (as the sampler ranks it: a trial stopped for trailing the others is not left
    out, which would credit only the configs that survived); None when fewer than two
    distinct configs or values ended, from which no importance can be read."""
    ended = [t for t in study.get_trials(deepcopy=False, states=ENDED)
             if last_value(t) is not None]
    if len({tuple(sorted(t.params.items())) for t in ended}) < 2 or len(
            {last_value(t) for t in ended}) < 2:
        return None
    copy = optuna.create_study(direction=study.direction, study_name=study.study_name)
    copy.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                               value=last_value(t)) for t in ended])
    return copy


def titles(study: optuna.Study) -> dict[str, str]:
    """Each figure's title, saying how many trials it rests on."""
    ended = sorted(study.get_trials(deepcopy=False, states=ENDED), key=lambda t: t.number)
    shown = [t for t in ended if last_value(t) is not None]
    reported = [t for t in ended if t.intermediate_values]
    done = [t for t in ended if t.state == TrialState.COMPLETE]
    name = study.study_name
    return {
        "best_so_far": f"Study {name} ({rests_on(ended)})",
        "parallel_coordinate": f"Study {name}, {rests_on(shown)}",
        "intermediate_values": f"Study {name}: the reported curves of {rests_on(reported)}",
        "optimization_history": f"Study {name}: the {len(done)} complete trials (of "
                                f"{rests_on(ended)}; pruned ones have no final value)",
        "param_importances": f"Study {name}: importances (fANOVA), {rests_on(shown)} (each "
                             "at its last report)"}


def figures(study: optuna.Study, keys: list[str], epochs: int, out_dir: Path) -> list[Path]:
    """The study's figures, each titled with the trials it rests on (:func:`titles`): best
    validation misclassification so far against epochs trained (every trial, pruned ones by
    the epochs they trained; ``epochs``: a complete trial's) and every trial across the
    searched ``keys`` (parallel coordinates); and Optuna's own: every trial's reported curve
    (pruned ones included; not drawn when no trial reported), the optimisation history
    (complete trials; not drawn without one) and parameter importances
    (:func:`importance_study`; not drawn without two distinct configs)."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    named = titles(study)
    ended = sorted(study.get_trials(deepcopy=False, states=ENDED), key=lambda t: t.number)
    marks = [plots.TrialMark(epochs_trained(t, epochs), last_value(t),
                             t.state == TrialState.PRUNED) for t in ended]
    rows = [({k: t.params.get(k) for k in keys}, last_value(t), t.state == TrialState.PRUNED)
            for t in ended if last_value(t) is not None]
    paths = [plots.plot_best_so_far(marks, named["best_so_far"], out_dir / "best_so_far.png"),
             plots.plot_parallel_coordinates(rows, keys, OBJECTIVE, named["parallel_coordinate"],
                                             out_dir / "parallel_coordinate.png")]
    optuna_plots: dict[str, Callable] = {}
    if any(t.intermediate_values for t in ended):  # none when no trial reached a report
        optuna_plots["intermediate_values"] = lambda: vis.plot_intermediate_values(study)
    if any(t.state == TrialState.COMPLETE for t in ended):  # none when every trial was pruned
        optuna_plots["optimization_history"] = lambda: vis.plot_optimization_history(study)
    if (scored := importance_study(study)) is not None:
        optuna_plots["param_importances"] = lambda: vis.plot_param_importances(
            scored, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    # Optuna's plots set the ggplot style for the whole process (plt.style.use): kept to
    # these figures, or every figure drawn later in the process would change.
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore")  # fANOVA's and matplotlib's chatter
        for name, plot in optuna_plots.items():
            ax = plot()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(10, 6)
            if name == "intermediate_values" and ax.get_legend() is not None:
                ax.get_legend().remove()  # a line per trial: the legend would cover them
            for loc in ("left", "center", "right"):  # Optuna's own title, replaced
                ax.set_title("", loc=loc)
            ax.set_title(named[name], loc="left", fontsize=11)
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path, metadata=plots.PNG_METADATA, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths
