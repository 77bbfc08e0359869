"""`make bench`: each figure measured side by side with its baseline, printed as a ratio.

    python bench/bench.py [fit logging gif compose run sweep server server-sweep auth-sweep ray
                           tune tune-seeds search]   (default: all)

In-process figures are the best of a few repeats (the least disturbed), alternating ours and
the baseline; whole commands (run, sweep, tune) run as a user runs them, into fresh stores.
`search` is the HPO literature's benchmark (best so far against epochs trained) for the study,
the grid and random search, in process; it writes docs/tuning_benchmark.png.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from annlab import plots, training
from annlab.data import Splits, make_splits
from annlab.network import NeuralNetClassifier
from annlab.spec import RunSpec

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


def _spec(*overrides: str):
    """The default config with ``overrides``, resolved."""
    from hydra import compose, initialize_config_dir

    import pipelines  # noqa: F401  (registers the config schema)
    from annlab.spec import resolve

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return resolve(compose(config_name="config", overrides=list(overrides)))


def _moons(noise: float):
    """The default data (raw coordinates) at ``noise``."""
    return _spec(f"data.noise={noise}", "data.standardize=false").data


def bench_fit() -> None:
    """1,000 full-batch epochs, 2-10-2 tanh, n_train 600: ours vs MLPClassifier (sgd, no
    momentum, batch = all, no early stopping), the same arithmetic per epoch."""
    from sklearn.neural_network import MLPClassifier

    s = make_splits(_moons(0.2), seed=0)
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

    s = make_splits(_moons(0.15), seed=0)
    model = NeuralNetClassifier(10, "sigmoid", learning_rate=4.0, epochs=1000, random_state=0)
    snapshots = training.train(model, s, training.frame_epochs(1000, 100))
    history = training.history_frame(model)
    size = {"width": 6.4, "height": 4.8, "dpi": 80}
    grid = 150

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def ours():
            plots.render_boundary(snapshots, "sigmoid", plots.Plane(s.X_train), s.y_train,
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
    target("run: make run, peak RSS (median)", statistics.median(peaks), "MB", 380,
           f"all: {', '.join(f'{p:.0f}' for p in peaks)}")  # an odd run peaks higher
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


def bench_server_sweep(pairs: int = 2) -> None:
    """The default 27-config `make sweep` (joblib launcher) through an `mlflow server` on
    PostgreSQL vs into the embedded sqlite store, alternating, each into a fresh empty store
    whose schema exists before the clock starts: the server's database is migrated when the
    server starts, the sqlite file is created first (as a user's outputs/mlflow.db exists).
    Each sweep starts on an otherwise idle machine if it can (:func:`_wait_idle`); the load
    averages at each start and end are reported (the sweep itself keeps both cores busy, so
    an end well above 2 means something else ran too)."""
    from annlab import tracking
    from tests.servers import MlflowServer, Postgres

    deadline = time.monotonic() + 600  # for the machine to become idle, over all sweeps
    walls: dict[str, list[float]] = {"server": [], "sqlite": []}
    loads: list[tuple[str, float, float]] = []  # each sweep's load average at start, end
    served: list[tuple[float, float]] = []  # CPU s of the server, of PostgreSQL, a sweep

    def sweep(name: str, uri: str, sweep_dir: str, servers=lambda: (set(), set())) -> None:
        start = _wait_idle(1.5, deadline)
        before = [_cpu_seconds(pids) for pids in servers()]
        walls[name].append(_cli("sweep=default", "hydra/launcher=joblib", f"tracking.uri={uri}",
                                f"hydra.sweep.dir={sweep_dir}"))
        loads.append((name, start, os.getloadavg()[0]))
        if name == "server":
            after = [_cpu_seconds(pids) for pids in servers()]
            served.append(tuple(sum(a[p] - b.get(p, 0.0) for p in a)
                                for a, b in zip(after, before)))

    postgres = Postgres().start()
    try:
        for i in range(pairs):
            with tempfile.TemporaryDirectory() as tmp:
                server = MlflowServer(postgres.create_database(f"sweep{i}"), Path(tmp) / "s")
                server.start()
                try:
                    sweep("server", server.url, f"{tmp}/server",
                          lambda s=server: (s.pids(), postgres.pids()))
                finally:
                    server.stop()
                uri = f"sqlite:///{tmp}/mlflow.db"
                tracking.open(uri, "warm-up")  # the schema; the sweep makes its experiment
                sweep("sqlite", uri, f"{tmp}/sqlite")
    finally:
        postgres.stop()
    report("sweep: server+PostgreSQL/sqlite, 27 configs", min(walls["server"]),
           min(walls["sqlite"]), 1.3, "sqlite")
    target("sweep: server vs sqlite, load at start", max(s for _, s, _ in loads), "", None,
           "1-minute load average at each sweep's start/end: "
           + ", ".join(f"{name} {s:.1f}/{e:.1f}" for name, s, e in loads) + "; walls: "
           + "; ".join(f"{k} {', '.join(f'{w:.1f}' for w in v)} s" for k, v in walls.items()))
    fastest = walls["server"].index(min(walls["server"]))
    target("sweep: server and PostgreSQL, CPU", sum(served[fastest]), "s", None,
           "CPU seconds they used during the fastest server sweep, on the cores its jobs "
           "use (server + PostgreSQL, each sweep: "
           + ", ".join(f"{s:.1f} + {p:.1f}" for s, p in served) + ")")


def bench_auth_sweep(pairs: int = 2) -> None:
    """A 9-config sweep (the default grid's tanh row, joblib launcher) through `make server
    AUTH=1` vs the same server without auth, both on PostgreSQL, alternating, each on a fresh
    database; the jobs log as the admin user."""
    import secrets
    import signal
    import subprocess

    from annlab.services import ADMIN_USER, PASSWORD_VAR
    from tests.servers import Postgres, free_port

    password = secrets.token_urlsafe(16)
    walls: dict[str, list[float]] = {"auth": [], "no auth": []}
    postgres = Postgres().start()
    try:
        for i in range(pairs):
            for name in walls:
                with tempfile.TemporaryDirectory() as tmp:
                    port, auth = free_port(), name == "auth"
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "pipelines.server", "--port", str(port),
                         "--db", postgres.create_database(f"auth{i}{'yn'[auth]}"),
                         "--state-dir", f"{tmp}/state", "--artifacts", f"{tmp}/artifacts",
                         *(["--auth"] if auth else [])],
                        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                        env={**os.environ, PASSWORD_VAR: password}, start_new_session=True)
                    try:
                        if "MLFLOW_TRACKING_URI" not in proc.stdout.readline():
                            sys.exit("auth-sweep: `make server` did not start")
                        login = {"MLFLOW_TRACKING_USERNAME": ADMIN_USER,
                                 "MLFLOW_TRACKING_PASSWORD": password} if auth else {}
                        walls[name].append(_cli(
                            "sweep=default", "model.activation=tanh", "hydra/launcher=joblib",
                            f"tracking.uri=http://127.0.0.1:{port}",
                            f"hydra.sweep.dir={tmp}/sweep", env=login))
                    finally:
                        proc.send_signal(signal.SIGTERM)
                        proc.communicate(timeout=60)
    finally:
        postgres.stop()
    report("sweep: server AUTH=1 / no auth, 9 configs", min(walls["auth"]),
           min(walls["no auth"]), 1.2, "no auth")


def _cpu_seconds(pids: set[int]) -> dict[int, float]:
    """User + system CPU seconds each live process of ``pids`` has used so far."""
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended since it was listed
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def _wait_idle(limit: float, deadline: float) -> float:
    """The 1-minute load average once it is at most ``limit`` (others' tests, or our own
    previous command, decaying), waiting until ``deadline`` (monotonic) at most."""
    while (load := os.getloadavg()[0]) > limit and time.monotonic() < deadline:
        print(f"load {load:.2f} > {limit}: waiting for an idle machine", flush=True)
        time.sleep(15)
    return load


BUDGET = 0.4  # of the grid's epochs: what `make tune` may train (issue 19)


def bench_tune() -> None:
    """`make tune` with its default settings, five study seeds, against the default `make
    sweep` grid on the same data and epochs: each seed must reach within one validation point
    of the grid's best final validation misclassification while training at most 40 % of the
    grid's epochs (the sum over trials of the epochs each actually trained); 4 of 5 must."""
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        grid_wall = _cli("sweep=default", f"tracking.uri=sqlite:///{tmp}/grid.db",
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
            wall = _cli("tune=default", f"tune.seed={seed}", f"tune.study=s{seed}",
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


BENCHMARKS = {"fit": bench_fit, "logging": bench_logging, "gif": bench_gif,
              "compose": bench_compose, "run": bench_run, "sweep": bench_sweep,
              "server": bench_server, "server-sweep": bench_server_sweep,
              "auth-sweep": bench_auth_sweep, "ray": bench_ray,
              "tune": bench_tune, "tune-seeds": bench_tune_seeds, "search": bench_search}


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
