"""`make bench`: each figure measured side by side with its baseline, printed as a ratio.

    python bench/bench.py [fit logging gif compose run sweep server ray tune tune-seeds]
    (default: all)

In-process figures are the best of a few repeats (the least disturbed), alternating ours and
the baseline; whole commands (run, sweep, tune) run as a user runs them, into fresh stores.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from annlab import plots, training
from annlab.data import make_splits
from annlab.network import NeuralNetClassifier

ROWS: list[tuple[str, str, str, str, str]] = []  # benchmark, annlab, baseline, value, target
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # pipelines/ and tests/servers.py, as `make` runs them from here


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    return min(_timed(fn) for _ in range(repeats))


def best_of_pair(ours: Callable[[], object], baseline: Callable[[], object], repeats: int
                 ) -> tuple[float, float]:
    """Alternate the two, so that a slow spell of the (shared, virtual) machine hits both."""
    pairs = [(_timed(ours), _timed(baseline)) for _ in range(repeats)]
    return min(p[0] for p in pairs), min(p[1] for p in pairs)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(name: str, ours: float, baseline: float, target: float | None,
           baseline_name: str = "baseline") -> None:
    """A ratio against a baseline measured in the same run."""
    ratio = ours / baseline
    verdict = "" if target is None else "ok" if ratio <= target else "MISSED"
    print(f"{name:<40} ours {ours:8.3f} s   {baseline_name} {baseline:8.3f} s   "
          f"ratio {ratio:6.3f}   {'' if target is None else f'target <= {target}'}  {verdict}",
          flush=True)
    ROWS.append((name, f"{ours:.3g} s", f"{baseline:.3g} s ({baseline_name})", f"{ratio:.3f}",
                 "(reported)" if target is None else f"<= {target} {verdict}"))


def bench_fit() -> None:
    """1,000 full-batch epochs, 2-10-2 tanh, n_train 600: ours vs MLPClassifier (sgd, no
    momentum, batch = all, no early stopping), the same arithmetic per epoch."""
    from sklearn.neural_network import MLPClassifier

    s = make_splits(1000, 0.2, 0.6, 0.2, seed=0)
    X, y = s.X_train, s.y_train

    def ours():
        NeuralNetClassifier(10, "tanh", learning_rate=0.5, epochs=1000, random_state=0).fit(X, y)

    def sklearn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MLPClassifier((10,), activation="tanh", solver="sgd", momentum=0.0,
                          learning_rate_init=0.5, batch_size=len(X), max_iter=1000, tol=0.0,
                          n_iter_no_change=10**9, shuffle=False, alpha=0.0,
                          random_state=0).fit(X, y)

    report("fit: 1000 epochs vs MLPClassifier", *best_of_pair(ours, sklearn, 9), 0.4)


def bench_logging() -> None:
    """4 per-epoch metrics x 1,000 epochs into a fresh sqlite store: one batched call (what
    annlab does) vs one log_metric call per point."""
    import pandas as pd

    from annlab import tracking

    history = pd.DataFrame(np.random.default_rng(0).random((1000, 4)),
                           columns=["train_loss", "val_loss", "train_misclassification",
                                    "val_misclassification"], index=range(1, 1001))
    with tempfile.TemporaryDirectory() as tmp:
        experiment = tracking.open(f"sqlite:///{tmp}/bench.db", "bench")
        client = experiment.store.client

        def batched():
            with experiment.start_run("batched") as run:
                run.log_history(history)

        def per_step():
            run_id = client.create_run(experiment.id, run_name="per-step").info.run_id
            for name, column in history.items():
                for step, value in column.items():
                    client.log_metric(run_id, name, float(value), step=int(step))
            client.set_terminated(run_id)

        report("logging: batch vs per-step", best_of(batched, 3), best_of(per_step, 1), 0.05)


def bench_gif() -> None:
    """Figure 2, 100 frames: annlab's numpy + Pillow path vs FuncAnimation redrawing
    contourf per frame (saved with PillowWriter), same snapshots and grid."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.figure import Figure

    s = make_splits(1000, 0.15, 0.6, 0.2, seed=0)
    model = NeuralNetClassifier(10, "sigmoid", learning_rate=4.0, epochs=1000, random_state=0)
    snapshots = training.train(model, s, training.frame_epochs(1000, 100))
    history = training.history_frame(model)
    size = {"width": 6.4, "height": 4.8, "dpi": 80}
    grid = 150

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def ours():
            plots.render_boundary(snapshots, history, "sigmoid", s.X_train, s.y_train,
                                  model.classes_, out / "a.gif", out / "a.png", grid_size=grid,
                                  fps=10, **size)

        def baseline():
            extent = plots.plot_extent(s.X_train)
            xs = np.linspace(extent[0], extent[1], grid)
            ys = np.linspace(extent[2], extent[3], grid)
            xx, yy = np.meshgrid(xs, ys)
            points = np.c_[xx.ravel(), yy.ravel()]
            fig = Figure(figsize=(size["width"], size["height"]), dpi=size["dpi"])
            ax = fig.add_subplot()

            def draw(i):
                snap = snapshots[i]
                model.coefs_, model.intercepts_ = snap.coefs, snap.intercepts
                ax.clear()
                p = model.predict_proba(points)[:, 1].reshape(xx.shape)
                ax.contourf(xx, yy, p, levels=10, cmap="RdBu", alpha=0.6)
                ax.contour(xx, yy, p, levels=[0.5], colors="k", linewidths=0.8)
                ax.scatter(s.X_train[:, 0], s.X_train[:, 1], c=s.y_train, cmap="RdBu",
                           edgecolors="k", s=14, linewidths=0.4)
                ax.set(xlabel="$x_1$", ylabel="$x_2$",
                       title=f"epoch {snap.epoch}  training score "
                             f"{1 - history.at[snap.epoch, 'train_misclassification']:.3f}")

            FuncAnimation(fig, draw, frames=len(snapshots)).save(
                out / "b.gif", writer=PillowWriter(fps=10))

        report("gif: 100 frames vs FuncAnimation", *best_of_pair(ours, baseline, 3), 0.04)


def _cli(*args: str, env: dict | None = None, prefix: tuple[str, ...] = (),
         without: str = "") -> float:
    """Wall seconds of ``python -m pipelines.run <args>`` (with the start-up settings in
    ``without`` switched off: bench/without.py); stops the benchmarks if it fails."""
    return _measured(*args, env=env, prefix=prefix, without=without)[0]


def _measured(*args: str, env: dict | None = None, prefix: tuple[str, ...] = (),
              without: str = "") -> tuple[float, float]:
    """(wall seconds, peak resident MB) of ``python -m pipelines.run <args>``."""
    import os
    import subprocess

    entry = [str(REPO / "bench" / "without.py"), without] if without else ["-m", "pipelines.run"]
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([*prefix, sys.executable, *entry, *args],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this process's own peak, not its parent's
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.exit(f"`pipelines.run {' '.join(args)}` failed:\n{err.read()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def target(name: str, value: float, unit: str, limit: float | None, note: str = "") -> None:
    """A value against a fixed limit (None: reported only)."""
    verdict = "" if limit is None else "ok" if value <= limit else "MISSED"
    print(f"{name:<40} {value:8.2f} {unit:<4} "
          f"{'' if limit is None else f'target <= {limit:g} {unit}'}  {verdict}  {note}",
          flush=True)
    ROWS.append((name, f"{value:.3g} {unit}", note, "",
                 "(reported)" if limit is None else f"<= {limit:g} {unit} {verdict}"))


def bench_sweep() -> None:
    """The default 27-config `make sweep`, end to end, into fresh stores, as a user runs it:
    the joblib launcher (one worker per core) against the basic launcher (one process, jobs in
    turn); and the joblib sweep without each start-up setting annlab keeps, for what each
    saves (it must save >= 5 % of the sweep's wall to stay)."""
    walls = {}
    for name, launcher, without in (("joblib", "joblib", ""), ("basic", "basic", ""),
                                    ("no fork server", "joblib", "forkserver"),
                                    ("no fork server, no gc settings", "joblib",
                                     "forkserver,gc")):
        with tempfile.TemporaryDirectory() as tmp:
            walls[name] = _cli("sweep=default", f"hydra/launcher={launcher}",
                               f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                               f"hydra.sweep.dir={tmp}/sweep", without=without)
    report("sweep: 27 configs, joblib / basic", walls["joblib"], walls["basic"], 0.65, "basic")
    target("sweep: 27 configs, joblib, wall", walls["joblib"], "s", 28)
    saved = 1 - walls["joblib"] / walls["no fork server"]
    target("sweep: the fork server saves", 100 * saved, "%", None,
           f"joblib {walls['joblib']:.1f} s, without it {walls['no fork server']:.1f} s")
    saved = 1 - walls["no fork server"] / walls["no fork server, no gc settings"]
    target("sweep: the gc settings save", 100 * saved, "%", None,
           f"without the fork server: {walls['no fork server']:.1f} s, also without them "
           f"{walls['no fork server, no gc settings']:.1f} s")


def bench_run() -> None:
    """`make run` with the default config into an existing store: wall time (median of 5;
    the target is 10 % over the 3.37 s measured on this machine before the operational layer
    was rebuilt) and peak resident memory of the process."""
    import statistics

    with tempfile.TemporaryDirectory() as tmp:
        store = [f"tracking.uri=sqlite:///{tmp}/mlflow.db"]
        _cli(*store, f"hydra.run.dir={tmp}/warm")  # the store exists, as for any later run
        walls, peaks, plain = [], [], []
        for i in range(5):  # alternating, so that a slow spell hits both
            wall, peak = _measured(*store, f"hydra.run.dir={tmp}/{i}")
            walls.append(wall)
            peaks.append(peak)
            plain.append(_cli(*store, f"hydra.run.dir={tmp}/gc{i}", without="gc"))
    wall = statistics.median(walls)
    target("run: make run, warm, wall (median)", wall, "s", 3.7,
           f"all: {', '.join(f'{w:.1f}' for w in walls)}")
    target("run: make run, peak RSS", max(peaks), "MB", 380)
    target("run: the gc settings save", 100 * (1 - wall / statistics.median(plain)), "%", None,
           f"without them {statistics.median(plain):.2f} s")


def bench_compose() -> None:
    """What a sweep's launching process spends before its first job on its checks (every
    point composed as its launcher will, validated, hashed and named: the grid's plan), for the
    default 27 points and for 1,000, against composing each of the 27 through Hydra's own
    config loader."""
    from types import SimpleNamespace

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import pipelines  # noqa: F401  (the schema)
    from hydra_plugins.annlab_sweeper._compose import compose_jobs, expand
    from hydra_plugins.annlab_sweeper._grid import plan

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = compose(config_name="config", overrides=["sweep=default"],
                         return_hydra_config=True)
        sweeper = SimpleNamespace(compose_all=lambda pts: compose_jobs(loader, master, pts))
        line = [f"{k}={v}" for k, v in master.hydra.sweeper.params.items()]
        points, _ = expand(line)
        ours, hydra = best_of_pair(lambda: plan(sweeper, [*line, "sweep=default"]),
                                   lambda: [loader.load_sweep_config(master, p) for p in points],
                                   2)
        large = ["model.hidden_nodes=range(1,11)", "train.learning_rate=0.05,0.1,0.2,0.5,1,2,5,"
                 "10,20,50", "seed=range(10)", "sweep=default"]
        thousand = best_of(lambda: plan(sweeper, large), 1)
    report("compose and check: 27 points", ours, hydra, None, "Hydra's loader (compose only)")
    target("compose and check: 1,000 points", thousand, "s", 5)


def bench_server() -> None:
    """4 per-epoch metrics x 1,000 epochs logged in one batched call: through an `mlflow
    server` on PostgreSQL (both started here, on loopback) vs into the embedded sqlite store."""
    import pandas as pd

    from annlab import tracking
    from tests.servers import MlflowServer, Postgres

    history = pd.DataFrame(np.random.default_rng(0).random((1000, 4)),
                           columns=["train_loss", "val_loss", "train_misclassification",
                                    "val_misclassification"], index=range(1, 1001))
    with tempfile.TemporaryDirectory() as tmp:
        postgres = Postgres().start()
        server = MlflowServer(postgres.create_database("bench"), Path(tmp) / "s")
        try:
            server.start()
            stores = {name: tracking.open(uri, "bench") for name, uri in
                      (("server", server.url), ("sqlite", f"sqlite:///{tmp}/bench.db"))}

            def logged(name):
                def run():
                    with stores[name].start_run("batched") as r:
                        r.log_history(history)
                return run

            ours, base = best_of_pair(logged("server"), logged("sqlite"), 5)
        finally:
            server.stop()
            postgres.stop()
    report("logging: server+PostgreSQL/sqlite", ours, base, 2.0)


def bench_ray() -> None:
    """The default 27-config sweep on a local two-node Ray cluster (started here, on loopback,
    in its own network namespace) vs the joblib launcher, same machine, fresh stores."""
    from tests.servers import LoopbackNetns, RayCluster

    netns = LoopbackNetns()
    cluster = RayCluster(netns)
    try:
        cluster.start()
        walls = {}
        for launcher in ("annlab_ray", "joblib"):
            with tempfile.TemporaryDirectory() as tmp:
                walls[launcher] = _cli(
                    "sweep=default", f"hydra/launcher={launcher}",
                    f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"hydra.sweep.dir={tmp}/sweep",
                    env=cluster.driver_env() if launcher == "annlab_ray" else None,
                    prefix=tuple(netns.cmd([])) if launcher == "annlab_ray" else ())
    finally:
        cluster.stop()
        netns.close()
    report("sweep: Ray 2 nodes / joblib", walls["annlab_ray"], walls["joblib"], 1.3)


def bench_tune() -> None:
    """`make tune` with its default settings, five study seeds, against the default `make
    sweep` grid on the same data and epochs: the best final validation misclassification and
    the epochs trained (the sum over trials of the epochs each actually trained)."""
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        grid_wall = _cli("sweep=default", f"tracking.uri=sqlite:///{tmp}/grid.db",
                         f"hydra.sweep.dir={tmp}/grid")
        from annlab import tracking

        grid = tracking.open(f"sqlite:///{tmp}/grid.db", "annlab")
        kids = [r for r in grid.search("") if r.parent_run_id]
        grid_best = min(1 - r.metrics["val_accuracy"] for r in kids)
        grid_epochs = sum(int(r.params["train.epochs"]) for r in kids)
        met = 0
        for seed in range(5):
            db = f"sqlite:///{tmp}/optuna-{seed}.db"
            wall = _cli("tune=default", f"tune.seed={seed}", f"tune.study=s{seed}",
                        f"tracking.uri=sqlite:///{tmp}/tune-{seed}.db",
                        f"tune.storage={db}", f"hydra.sweep.dir={tmp}/tune-{seed}")
            study = optuna.load_study(study_name=f"s{seed}", storage=db)
            done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
            epochs = sum(max(t.intermediate_values, default=0) if t.state.name == "PRUNED"
                         else 1000 for t in done)
            best = min(t.value for t in done if t.state.name == "COMPLETE")
            ok = best <= grid_best + 1e-9 and epochs <= 0.4 * grid_epochs
            met += ok
            print(f"{'tune: seed ' + str(seed):<34} best {best:.3f} (grid {grid_best:.3f})  "
                  f"epochs {epochs} = {epochs / grid_epochs:.2f} of the grid's  "
                  f"{wall:5.1f} s (grid {grid_wall:.1f} s)  {'ok' if ok else 'MISSED'}",
                  flush=True)
    target("tune: seeds meeting both targets", 5 - met, "miss", 1,
           f"({met} of 5 seeds: as good as the grid's best in <= 40 % of its epochs)")


def bench_tune_seeds(seeds: range = range(5, 25)) -> None:
    """How often the default study reaches the grid's best (0.015) within 40 % of the grid's
    epochs, over seeds other than the five above: the same sampler, pruner, search space and
    training as `make tune`, in process and without MLflow (trials asked two at a time, as the
    joblib launcher runs them; each pair trained in turn, so a trial's pruner sees its partner's
    whole curve). ~1 minute."""
    import optuna
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import pipelines  # noqa: F401  (registers the config schema)
    from annlab import study as tune
    from annlab.pipeline import build_data, build_model

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = compose(config_name="config", overrides=["tune=default"])
    splits, t, budget, hits = build_data(base), base.tune, 0.4 * 27 * base.train.epochs, 0
    for seed in seeds:
        OmegaConf.update(base, "tune.seed", seed)
        study, epochs = optuna.create_study(direction="minimize"), 0
        tune.sampler_and_pruner(base.tune, study)
        while len(study.trials) < t.n_trials:
            pair = [study.ask() for _ in range(min(2, t.n_trials - len(study.trials)))]
            models = []
            for trial in pair:
                values = tune.suggest(trial, base.tune)
                model = build_model(OmegaConf.merge(base, OmegaConf.from_dotlist(
                    [f"{k}={v}" for k, v in values.items()])))

                def report(m, trial=trial) -> bool:
                    if m.n_iter_ % t.report_every:
                        return False
                    trial.report(m.history_["val_misclassification"][-1], m.n_iter_)
                    return trial.should_prune()

                training.train(model, splits, [], report)
                epochs += model.n_iter_
                models.append(model)
            for trial, model in zip(pair, models):
                if model.n_iter_ < base.train.epochs:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(trial, model.history_["val_misclassification"][-1])
        best = study.best_value
        hits += best <= 0.015 + 1e-9 and epochs <= budget
        print(f"{'tune, in process: seed ' + str(seed):<34} best {best:.3f}  epochs {epochs}",
              flush=True)
    print(f"tune, in process: {hits} of {len(seeds)} seeds reach 0.015 within "
          f"{budget:.0f} epochs", flush=True)


BENCHMARKS = {"fit": bench_fit, "logging": bench_logging, "gif": bench_gif,
              "compose": bench_compose, "run": bench_run, "sweep": bench_sweep,
              "server": bench_server, "ray": bench_ray, "tune": bench_tune,
              "tune-seeds": bench_tune_seeds}


def main(names: list[str]) -> None:
    for name in names:
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    for name in names or list(BENCHMARKS):
        BENCHMARKS[name]()
    print("\n| benchmark | annlab | baseline or note | ratio | target |\n"
          "| --- | --- | --- | --- | --- |")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
