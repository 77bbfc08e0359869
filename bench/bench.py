"""`make bench`: each figure measured side by side with its baseline, printed as a ratio.

    python bench/bench.py [fit logging gif files compose run sweep server server-sweep
                           auth-sweep ray tune tune-seeds search scale scale-server peer]
                          (default: all)

In-process figures are the best of a few repeats (the least disturbed), alternating ours and
the baseline; whole commands (run, sweep, tune) run as a user runs them, into fresh stores.
`search` is the HPO literature's benchmark (best so far against epochs trained) for the study,
the grid and random search, in process; it writes docs/tuning_benchmark.png. `scale`,
`scale-server` and `peer` (bench/scale.py) are a lab's grids: minutes each.

A run ends by printing its table and writing docs/benchmarks.md: the rows of the benchmarks it
ran replace theirs, the other benchmarks' rows stay as they were measured (each row says when).
"""

from __future__ import annotations

import datetime
import inspect
import os
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from common import (
    REPO,
    ROWS,
    best_of,
    best_of_pair,
    cli,
    cpu_seconds,
    grid_planner,
    measured,
    moons,
    report,
    target,
    wait_idle,
)
from scale import bench_peer, bench_scale, bench_scale_server
from tuning import bench_search, bench_tune, bench_tune_seeds

from annlab import plots, training
from annlab.data import make_splits
from annlab.network import NeuralNetClassifier


def bench_fit() -> None:
    """1,000 full-batch epochs, 2-10-2 tanh, n_train 600: ours vs MLPClassifier (sgd, no
    momentum, batch = all, no early stopping), the same arithmetic per epoch, without L2 and
    with the default config's (reg_lambda = alpha = 0.01)."""
    from sklearn.neural_network import MLPClassifier

    s = make_splits(moons(0.2), seed=0)
    X, y = s.X_train, s.y_train

    for name, l2, limit in (("", 0.0, 0.4), (", L2", 0.01, 0.49)):
        def ours(l2=l2):
            NeuralNetClassifier(10, "tanh", learning_rate=0.5, reg_lambda=l2, epochs=1000,
                                random_state=0).fit(X, y)

        def sklearn(l2=l2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                MLPClassifier((10,), activation="tanh", solver="sgd", momentum=0.0,
                              learning_rate_init=0.5, batch_size=len(X), max_iter=1000,
                              tol=0.0, n_iter_no_change=10**9, shuffle=False, alpha=l2,
                              random_state=0).fit(X, y)

        report(f"fit: 1000 epochs vs MLPClassifier{name}", *best_of_pair(ours, sklearn, 9),
               limit)


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

    s = make_splits(moons(0.15), seed=0)
    model = NeuralNetClassifier(10, "sigmoid", learning_rate=4.0, epochs=1000, random_state=0)
    snapshots = training.train(model, s, training.frame_epochs(1000, 100))
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
                             f"{1 - snap.train_misclassification:.3f}")

            FuncAnimation(fig, draw, frames=len(snapshots)).save(
                out / "b.gif", writer=PillowWriter(fps=10))

        report("gif: 100 frames vs FuncAnimation", *best_of_pair(ours, baseline, 3), 0.04)


def bench_files() -> None:
    """A user's own table: a 1,000,000-row CSV of 20 columns (19 features and the label,
    written here) read and checked by annlab (`annlab.tables.read`: pandas' pyarrow reader, the
    checks, float64 arrays and the content digest) against pandas' pyarrow reader alone, in
    process (best of 3, alternating) and each in a fresh process for its peak memory; then
    `make run` training on it (20 full-batch epochs) into a fresh store, its wall and peak."""
    import pandas as pd
    import pyarrow as pa
    from pyarrow import csv
    from sklearn.datasets import make_classification

    from annlab import tables

    X, y = make_classification(1_000_000, 19, n_informative=6, random_state=0)
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"x{i}" for i in range(19)])
    frame["label"] = y
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.csv"
        csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)
        del X, y, frame

        def ours():
            tables._read.cache_clear()  # read() keeps a table per process: read it again
            tables.read("data.path", str(path), "label", None, 1 << 40)

        ours_s, pandas_s = best_of_pair(ours, lambda: pd.read_csv(path, engine="pyarrow"), 3)
        report("files: read and check a 1e6 x 20 CSV vs pandas", ours_s, pandas_s, 1.5,
               "pd.read_csv(engine='pyarrow')")
        read = ("import sys; from annlab import tables; "
                "tables.read('k', sys.argv[1], 'label', None, 1 << 40)")
        _, ours_mb = measured(str(path), entry=["-c", read])
        _, pandas_mb = measured(str(path), entry=[
            "-c", "import sys, pandas as pd; pd.read_csv(sys.argv[1], engine='pyarrow')"])
        target("files: peak RSS, read and check", ours_mb, "MB", None,
               f"pandas' reader alone {pandas_mb:.0f} MB, each in a fresh process; the file "
               f"{path.stat().st_size / 1e6:.0f} MB")
        wall, peak = measured("data=file", f"data.path={path}", "data.target=label",
                              "train.epochs=20", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                              f"hydra.run.dir={tmp}/run")
        target("files: make run on it, 20 epochs", wall, "s", None,
               f"peak RSS {peak:.0f} MB; 600,000 training rows, a 19-10-2 network")


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
            walls[name] = cli("sweep=default", f"hydra/launcher={launcher}",
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
        cli(*store, f"hydra.run.dir={tmp}/warm")  # the store exists, as for any later run
        walls, peaks, plain = [], [], []
        for i in range(5):  # alternating, so that a slow spell hits both
            wall, peak = measured(*store, f"hydra.run.dir={tmp}/{i}")
            walls.append(wall)
            peaks.append(peak)
            plain.append(cli(*store, f"hydra.run.dir={tmp}/gc{i}", without="gc"))
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
    from hydra_plugins.annlab_sweeper._compose import expand

    with grid_planner() as (plan, line, (loader, master)):
        points, _ = expand(line)
        ours, hydra = best_of_pair(lambda: plan(line),
                                   lambda: [loader.load_sweep_config(master, p) for p in points],
                                   2)
        large = ["model.hidden_nodes=range(1,11)", "train.learning_rate=0.05,0.1,0.2,0.5,1,2,5,"
                 "10,20,50", "seed=range(10)"]
        thousand = best_of(lambda: plan(large), 1)
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
                walls[launcher] = cli(
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
        start = wait_idle(1.5, deadline)
        before = [cpu_seconds(pids) for pids in servers()]
        walls[name].append(cli("sweep=default", "hydra/launcher=joblib", f"tracking.uri={uri}",
                                f"hydra.sweep.dir={sweep_dir}"))
        loads.append((name, start, os.getloadavg()[0]))
        if name == "server":
            after = [cpu_seconds(pids) for pids in servers()]
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
                        walls[name].append(cli(
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


BENCHMARKS = {"fit": bench_fit, "logging": bench_logging, "gif": bench_gif,
              "files": bench_files, "compose": bench_compose, "run": bench_run,
              "sweep": bench_sweep,
              "server": bench_server, "server-sweep": bench_server_sweep,
              "auth-sweep": bench_auth_sweep, "ray": bench_ray,
              "tune": bench_tune, "tune-seeds": bench_tune_seeds, "search": bench_search,
              "scale": bench_scale, "scale-server": bench_scale_server, "peer": bench_peer}
DOC = REPO / "docs" / "benchmarks.md"
COLUMNS = ("bench", "measured", "figure", "annlab", "baseline or note", "ratio", "target")


def main(names: list[str]) -> None:
    for name in names:
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    ran = {}
    for name in names or list(BENCHMARKS):
        first = len(ROWS)
        BENCHMARKS[name]()
        ran[name] = ROWS[first:]
    print("\n| benchmark | annlab | baseline or note | ratio | target |\n"
          "| --- | --- | --- | --- | --- |")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")
    write_doc(ran, datetime.date.today().isoformat())
    print(f"\nwrote {DOC.relative_to(REPO)}")


def write_doc(ran: dict[str, list[tuple[str, ...]]], when: str) -> None:
    """docs/benchmarks.md: what each benchmark measures (its docstring's first sentence) and
    one table, the rows of the benchmarks in ``ran`` (measured ``when``) replacing theirs and
    the other rows kept from the file."""
    rows = {name: [] for name in BENCHMARKS}
    for row in doc_rows():
        if row[0] not in ran:
            rows.setdefault(row[0], []).append(row)
    for name, new in ran.items():
        rows[name] = [(name, when, *row) for row in new]
    lines = [
        "# Benchmarks (`make bench`)", "",
        "Written by `bench/bench.py` (`make bench` runs every benchmark; `python bench/bench.py "
        "scale peer` some of them): each figure against its baseline, measured side by side "
        "in the same run, or against a fixed target. A run replaces the rows of the "
        "benchmarks it ran and keeps the others, so rows may come from different days "
        "(`measured`). Absolute times depend on the machine (a 2-core virtual machine, shared "
        "with other work; the notes give the load where it matters): compare the ratios.", "",
        *(f"- `{name}`: {summary(fn)}" for name, fn in BENCHMARKS.items()), "",
        table_line(COLUMNS), table_line(["---"] * len(COLUMNS)),
        *(table_line(row) for name in rows for row in rows[name])]
    DOC.write_text("\n".join(lines) + "\n")


def table_line(cells) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def doc_rows() -> list[tuple[str, ...]]:
    """The table rows docs/benchmarks.md holds now (none if it has no such table)."""
    if not DOC.exists():
        return []
    rows, table = [], False
    for line in DOC.read_text().splitlines():
        cells = tuple(c.strip().replace("\\|", "|")
                      for c in re.split(r"(?<!\\)\|", line.strip())[1:-1])
        if cells == COLUMNS:
            table = True
        elif table and len(cells) == len(COLUMNS) and not set(cells[0]) <= {"-"}:
            rows.append(cells)
    return rows


def summary(fn) -> str:
    """A benchmark's docstring's first sentence, on one line, Sphinx roles as code."""
    text = " ".join(inspect.getdoc(fn).split())
    text = re.sub(r":\w+:`", "`", text)
    return re.split(r"(?<=[.;])\s+(?=[A-Z`~])", text, maxsplit=1)[0]


if __name__ == "__main__":
    main(sys.argv[1:])
