"""`make tune` against the grid it replaces: the CLI study over seeds (`tune`, `tune-seeds`)
and the HPO literature's anytime benchmark (`search`: best so far against epochs trained,
for the study, the grid in random order and random search; writes docs/tuning_benchmark.png)."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from common import REPO, cli, target

from annlab import plots, training
from annlab.data import Splits
from annlab.spec import RunSpec

BUDGET = 0.4  # of the grid's epochs: what `make tune` may train (issue 19)


def bench_tune() -> None:
    """`make tune` with its default settings, five study seeds, against the default `make
    sweep` grid on the same data and epochs: each seed must reach within one validation point
    of the grid's best final validation misclassification while training at most 40 % of the
    grid's epochs (the sum over trials of the epochs each actually trained); 4 of 5 must."""
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        grid_wall = cli("sweep=default", f"tracking.uri=sqlite:///{tmp}/grid.db",
                         f"hydra.sweep.dir={tmp}/grid")
        from annlab import tracking

        grid = tracking.open(f"sqlite:///{tmp}/grid.db", "annlab")
        kids = [r for r in grid.search("") if r.parent_run_id]
        grid_best = min(1 - r.metrics["val_accuracy"] for r in kids)
        grid_epochs = sum(int(r.params["train.epochs"]) for r in kids)
        bar = grid_best + _search_setup().one_point
        met = 0
        for seed in range(5):
            db = f"sqlite:///{tmp}/optuna-{seed}.db"
            wall = cli("tune=default", f"tune.seed={seed}", f"tune.study=s{seed}",
                        f"tracking.uri=sqlite:///{tmp}/tune-{seed}.db",
                        f"tune.storage={db}", f"hydra.sweep.dir={tmp}/tune-{seed}")
            study = optuna.load_study(study_name=f"s{seed}", storage=db)
            # Failed trials (diverged) trained too, to their last report.
            epochs = sum(1000 if t.state.name == "COMPLETE" else
                         max(t.intermediate_values, default=0) for t in study.trials)
            best = min(t.value for t in study.trials if t.state.name == "COMPLETE")
            ok = best <= bar + 1e-9 and epochs <= BUDGET * grid_epochs
            met += ok
            print(f"{'tune: seed ' + str(seed):<34} best {best:.3f} (bar {bar:.3f})  "
                  f"epochs {epochs} = {epochs / grid_epochs:.2f} of the grid's  "
                  f"{wall:5.1f} s (grid {grid_wall:.1f} s)  {'ok' if ok else 'MISSED'}",
                  flush=True)
    target("tune: seeds missing the bar", 5 - met, "miss", 1,
           f"({met} of 5 seeds reach <= {bar:.3f}, within one validation point of the "
           f"grid's best, in <= 40 % of its epochs)")


# -- search: best so far against epochs trained, as the Hyperband, ASHA and BOHB papers ---------
# Everything in process and without MLflow: the same data, config, space, sampler, pruner and
# training as `make sweep` and `make tune`, each study in a fresh in-memory storage.

SEARCH_SEEDS = range(5, 25)  # study seeds other than bench_tune's five
SEARCH_AT = (0.1, 0.2, 0.4, 1.0)  # fractions of the grid's epochs shown in the table


class Trial(NamedTuple):
    """One trial of a search, as the benchmark counts it."""

    epochs: int  # trained: all of them, or to where it was pruned (or diverged)
    value: float | None  # final validation misclassification; None unless complete
    told: float | None  # what its study was told (the study's objective); None likewise
    diverged: bool = False


def spent(records: list[Trial]) -> int:
    return sum(r.epochs for r in records)


def best(records: list[Trial]) -> float:
    """The best final validation misclassification of the complete trials."""
    return min((r.value for r in records if r.value is not None), default=1.0)


def picked(records: list[Trial]) -> float:
    """The validation misclassification of the trial the study calls best (lowest objective)."""
    return min((r for r in records if r.value is not None), key=lambda r: r.told).value


@dataclass
class SearchSetup:
    base: RunSpec  # the `make tune` config
    splits: Splits
    grid: list[dict]  # the default sweep's points (dotted key -> value), in grid order
    one_point: float  # one validation sample's share of the misclassification


def _search_setup() -> SearchSetup:
    from hydra import compose, initialize_config_dir

    import pipelines  # noqa: F401  (registers the config schema)
    from annlab.pipeline import build_data
    from annlab.spec import resolve
    from hydra_plugins.annlab_sweeper._compose import expand

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = resolve(compose(config_name="config", overrides=["tune=default"]))
        sweep = compose(config_name="config", overrides=["sweep=default"],
                        return_hydra_config=True)
    grid = [dict(o.split("=", 1) for o in point) for point in expand(
        [f"{k}={v}" for k, v in sweep.hydra.sweeper.params.items()])[0]]
    splits = build_data(base).scaled()  # what the network sees, as in annlab.pipeline.rebuild
    return SearchSetup(base, splits, grid, 1 / len(splits.y_val))


def _fit(setup: SearchSetup, values: dict, objective: str = "val_misclassification",
         stop=None) -> Trial:
    """One config (the base with these dotted values) trained as its job trains it (``stop``:
    its pruning)."""
    import yaml

    from annlab.network import DivergenceError
    from annlab.pipeline import build_model
    from annlab.spec import replaced, resolve_plain

    typed = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in values.items()}
    model = build_model(resolve_plain(replaced(setup.base.config, typed)))
    try:
        training.train(model, setup.splits, [], stop)
    except DivergenceError:
        return Trial(model.n_iter_, None, None, diverged=True)
    if model.n_iter_ < model.epochs:
        return Trial(model.n_iter_, None, None)
    return Trial(model.n_iter_, model.history_["val_misclassification"][-1],
                 model.history_[objective][-1])


def _values(trial, tune_spec) -> dict:
    from annlab import study as tune

    return tune.suggest(trial, tune_spec)


def _study(setup: SearchSetup, seed: int, objective: str = "val_misclassification"
           ) -> list[Trial]:
    """`make tune`'s study: its sampler (seeded as ``tune.seed=seed`` seeds it), pruner and
    space, trials asked two at a time as the joblib launcher runs them, until
    ``tune.n_trials`` have ended; a diverged trial fails and is asked again, as in the CLI.
    Each pair is trained in turn, in the order asked, so the second one's pruner sees the
    first one's whole curve; in the CLI, which of the two reaches a pruning rung first depends
    on timing, so one seed's CLI study may go otherwise (a rate over many seeds is the figure
    to trust). The sampler and pruner see ``objective``; each record keeps the final
    validation misclassification too."""
    import optuna

    from annlab import study as tune

    state = optuna.trial.TrialState
    t = dataclasses.replace(setup.base.tune, seed=seed)
    study = optuna.create_study(direction="minimize")  # in memory: nothing to resume
    tune.sampler_and_pruner(t, study)
    records: list[Trial] = []
    while (left := t.n_trials - len(study.get_trials(
            deepcopy=False, states=(state.COMPLETE, state.PRUNED)))) > 0:
        pair = [study.ask() for _ in range(min(2, left))]
        done = [_trial(setup, t, trial, objective) for trial in pair]
        for trial, record in zip(pair, done):
            if record.diverged:
                study.tell(trial, state=state.FAIL)
            elif record.value is None:
                study.tell(trial, state=state.PRUNED)
            else:
                study.tell(trial, record.told)
        records += done
    return records


def _trial(setup: SearchSetup, t, trial, objective: str) -> Trial:
    """A trial trained with what its job's :class:`annlab.study.Reporter` does: a report of
    ``objective`` every ``report_every`` epochs, pruned when the pruner says so."""
    def stop(m) -> bool:
        if m.n_iter_ % t.report_every:
            return False
        trial.report(m.history_[objective][-1], m.n_iter_)
        return trial.should_prune()

    return _fit(setup, _values(trial, t), objective, stop)


def _random_search(setup: SearchSetup, seed: int, n: int) -> list[Trial]:
    """``n`` full trials sampled uniformly (log ranges in log) from the study's space."""
    import optuna

    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    return [_fit(setup, _values(study.ask(), setup.base.tune)) for _ in range(n)]


def _search_seed(setup: SearchSetup, n_random: int, seed: int) -> dict[str, list[Trial]]:
    return {"study (make tune)": _study(setup, seed),
            "random search": _random_search(setup, seed, n_random),
            "study on val_loss": _study(setup, seed, "val_loss")}


def best_so_far(records: list[Trial], at: np.ndarray) -> np.ndarray:
    """The best value of the complete trials among those done within each of ``at`` epochs
    (cumulative, in trial order); NaN before the first complete one. A search that ended
    before ``at`` keeps its final best."""
    cumulative = np.cumsum([r.epochs for r in records])
    found = np.minimum.accumulate([np.inf if r.value is None else r.value for r in records])
    done = np.searchsorted(cumulative, at, side="right") - 1
    so_far = np.where(done >= 0, found[np.maximum(done, 0)], np.inf)
    return np.where(np.isfinite(so_far), so_far, np.nan)


def bench_search(seeds: range = SEARCH_SEEDS) -> None:
    """Best validation misclassification so far against epochs trained (pruned trials
    included, to where they stopped), over ``seeds``: the default study as `make tune` runs
    it; the default grid in a random order per seed (its order in conf/sweep/default.yaml is
    arbitrary and would give one curve with no spread; a random order gives the grid's
    expected curve at any budget); random search over the study's space without pruning at
    the grid's budget; and the study with val_loss as its objective. A table, the bar of
    :func:`bench_tune` over these seeds, and docs/tuning_benchmark.png. ~1 minute."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial
    from multiprocessing import get_context

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup = _search_setup()
    start = time.perf_counter()
    # Training is deterministic (the model's seed is the config's): each grid config is
    # trained once, and only its order varies with the seed.
    grid = [_fit(setup, point) for point in setup.grid]
    grid_epochs, grid_best = spent(grid), best(grid)
    n_random = grid_epochs // setup.base.train.epochs  # the grid's budget, in full trials
    # One seed a process, one process a core: the studies share nothing, not even a storage.
    with ProcessPoolExecutor(2, mp_context=get_context("fork")) as pool:
        by_seed = list(pool.map(partial(_search_seed, setup, n_random), seeds))
    runs = {name: [r[name] for r in by_seed] for name in by_seed[0]}
    runs = {"study (make tune)": runs["study (make tune)"],
            "grid, random order": [[grid[i] for i in np.random.default_rng(s).permutation(
                len(grid))] for s in seeds], **runs}
    at = np.array(SEARCH_AT) * grid_epochs
    print(f"search: {len(seeds)} seeds in {time.perf_counter() - start:.0f} s; the grid's "
          f"best {grid_best:.3f} in {grid_epochs} epochs; in grid order, best at "
          + ", ".join(f"{100 * f:g} %: {v:.3f}" for f, v in zip(SEARCH_AT,
                                                               best_so_far(grid, at))))
    xs = np.linspace(0, 1, 541)
    curves = {name: np.array([best_so_far(r, xs * grid_epochs) for r in rs])
              for name, rs in runs.items()}
    _search_table(runs, grid_epochs)
    bar = grid_best + setup.one_point
    _search_bar("search: study (make tune), seeds missing the bar", runs["study (make tune)"],
                grid_epochs, bar, len(seeds) // 5)
    _search_bar("search: study on val_loss, seeds missing the bar", runs["study on val_loss"],
                grid_epochs, bar, None)
    _val_loss_finding(runs["study (make tune)"], runs["study on val_loss"])
    path = REPO / "docs" / "tuning_benchmark.png"
    ends = {name: max(spent(r) for r in rs) / grid_epochs for name, rs in runs.items()}
    _search_figure(xs, {k: v for k, v in curves.items() if k != "study on val_loss"}, ends,
                   grid_best, bar, grid_epochs, path)
    print(f"search: figure {path.relative_to(REPO)}", flush=True)


def _quartiles(values) -> str:
    q1, median, q3 = 100 * np.percentile(values, [25, 50, 75])
    return f"{median:.2f} [{q1:.2f}, {q3:.2f}]"


def _search_table(runs: dict[str, list[list[Trial]]], grid_epochs: int) -> None:
    """Median [quartiles] of the best so far (in %) at SEARCH_AT, a row per method (and one
    in the final table)."""
    at = np.array(SEARCH_AT) * grid_epochs
    rows = {}
    for name, rs in runs.items():
        so_far = np.array([best_so_far(r, at) for r in rs])
        used = np.median([spent(r) for r in rs]) / grid_epochs
        rows[name] = ([_quartiles(so_far[:, i]) for i in range(len(at))], used,
                      100 * np.median(so_far[:, SEARCH_AT.index(BUDGET)]))
    print(f"\nbest validation misclassification so far (%), median [quartiles] over "
          f"{len(next(iter(runs.values())))} seeds, at a fraction of the grid's "
          f"{grid_epochs} epochs\n{'method':<22}" + "".join(f"{f'{100 * f:g} %':<21}"
                                                         for f in SEARCH_AT) + "epochs used")
    for name, (cells, used, _) in rows.items():
        print(f"{name:<22}" + "".join(f"{c:<21}" for c in cells) + f"{used:.2f}")
    print(flush=True)
    for name, (cells, used, at_budget) in rows.items():
        target(f"search: {name}, best at {100 * BUDGET:g} %", at_budget, "%", None,
               "median [quartiles] at " + "; ".join(
                   f"{100 * f:g} %: {c}" for f, c in zip(SEARCH_AT, cells))
               + f"; median epochs used {used:.2f} of the grid's")


def _search_bar(row: str, runs: list[list[Trial]], grid_epochs: int, bar: float,
                limit: float | None) -> None:
    """Seeds whose whole study reaches ``bar`` within BUDGET of the grid's epochs (``limit``:
    the misses allowed, 1 in 5 as for the CLI's five seeds), and each seed's best and
    epochs."""
    met = sum(best(r) <= bar + 1e-9 and spent(r) <= BUDGET * grid_epochs for r in runs)
    print(f"{row}: best@epochs fraction per seed: "
          + " ".join(f"{best(r):.3f}@{spent(r) / grid_epochs:.2f}" for r in runs), flush=True)
    target(row, len(runs) - met, "miss", limit,
           f"({met} of {len(runs)} seeds reach <= {bar:.3f} in <= {100 * BUDGET:g} % of the "
           "grid's epochs, in process)")


def _val_loss_finding(ours: list[list[Trial]], on_loss: list[list[Trial]]) -> None:
    """Whether val_loss ranks configs better than misclassification: seed by seed, the best
    misclassification each study found, and that of the trial the val_loss study picks (its
    lowest val_loss, which is what `make tune` would register)."""
    def versus(values) -> str:
        diff = np.array(values) - np.array([best(r) for r in ours])
        return (f"better {np.sum(diff < -1e-9)}, same {np.sum(abs(diff) <= 1e-9)}, worse "
                f"{np.sum(diff > 1e-9)}")

    found, picks = [best(r) for r in on_loss], [picked(r) for r in on_loss]
    target("search: study on val_loss, its pick", 100 * np.median(picks), "%", None,
           f"median [quartiles] {_quartiles(picks)}, means: its pick {100 * np.mean(picks):.2f}"
           f", its best {100 * np.mean(found):.2f}, the misclassification study's "
           f"{100 * np.mean([best(r) for r in ours]):.2f}; seed by seed against the latter: "
           f"its best {versus(found)}; its pick {versus(picks)}")


def _search_figure(xs: np.ndarray, curves: dict, ends: dict, grid_best: float, bar: float,
                   grid_epochs: int, path: Path) -> None:
    """A median line and an interquartile band per method, drawn to where its last seed
    ended (a study ends before the grid's budget: flat beyond it, it trains nothing)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for i, (name, curve) in enumerate(curves.items()):
        shown = xs <= ends[name] + 1e-9
        q1, median, q3 = np.percentile(curve[:, shown], [25, 50, 75], axis=0)
        ax.fill_between(xs[shown], q1, q3, color=f"C{i}", alpha=0.2, lw=0)
        ax.plot(xs[shown], median, color=f"C{i}", lw=2, label=f"{name}: median, quartiles")
        ax.plot(xs[shown][-1], median[-1], "o", color=f"C{i}")
    ax.axhline(grid_best, color="k", lw=0.8, label=f"the grid's best ({grid_best:.3f})")
    ax.axhline(bar, color="k", lw=0.8, ls=":", label=f"one validation point more ({bar:.3f})")
    ax.axvline(BUDGET, color="grey", lw=0.8, ls="--", label=f"{100 * BUDGET:g} % of the grid")
    ax.set(xlim=(0, 1), ylim=(0, 0.08),
           xlabel=f"epochs trained (pruned trials to where they stopped), fraction of the "
                  f"default grid's {grid_epochs}",
           ylabel="best validation misclassification so far",
           title=f"Best so far against epochs trained, {len(curve)} seeds (a dot: the last "
                 "seed's end)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, metadata=plots.PNG_METADATA)


def bench_tune_seeds(seeds: range = SEARCH_SEEDS) -> None:
    """The bar of :func:`bench_tune` over other seeds: the default study alone, in process, as
    :func:`bench_search` runs it. ~1 minute."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup = _search_setup()
    grid = [_fit(setup, point) for point in setup.grid]
    _search_bar("tune, in process: seeds missing the bar", [_study(setup, s) for s in seeds],
                spent(grid), best(grid) + setup.one_point, len(seeds) // 5)
