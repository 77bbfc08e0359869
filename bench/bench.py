"""`make bench`: each figure measured side by side with its baseline, printed as a ratio.

    python bench/bench.py [fit logging gif ...]   (default: every benchmark)

Times are the best of a few repeats (the least disturbed), all in this one process.
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

RESULTS: list[tuple[str, float, float, float]] = []


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


def report(name: str, ours: float, baseline: float, target: float) -> None:
    ratio = ours / baseline
    RESULTS.append((name, ours, baseline, ratio))
    verdict = "ok" if ratio <= target else "MISSED"
    print(f"{name:<34} ours {ours:8.3f} s   baseline {baseline:8.3f} s   "
          f"ratio {ratio:6.3f}   target <= {target}  {verdict}", flush=True)


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

        report("gif: 100 frames vs FuncAnimation", *best_of_pair(ours, baseline, 3), 0.03)


def bench_sweep() -> None:
    """The default 27-config `make sweep`, end to end, with the joblib launcher (one worker per
    core) and with the basic launcher (one process, jobs in turn), each into a fresh store."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    walls = {}
    for launcher in ("joblib", "basic"):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-m", "pipelines.run", "sweep=default",
                 f"hydra/launcher={launcher}", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                 f"hydra.sweep.dir={tmp}/sweep"], cwd=repo, capture_output=True, text=True)
            walls[launcher] = time.perf_counter() - start
            if out.returncode != 0:
                sys.exit(f"sweep with {launcher} failed:\n{out.stderr[-2000:]}")
    speedup = walls["basic"] / walls["joblib"]
    print(f"{'sweep: 27 configs, wall':<34} joblib {walls['joblib']:8.1f} s   target <= 60  "
          f"{'ok' if walls['joblib'] <= 60 else 'MISSED'}", flush=True)
    print(f"{'sweep: joblib speed-up over basic':<34} basic {walls['basic']:9.1f} s   "
          f"speed-up {speedup:5.2f}x   target >= 1.6  {'ok' if speedup >= 1.6 else 'MISSED'}",
          flush=True)


BENCHMARKS = {"fit": bench_fit, "logging": bench_logging, "gif": bench_gif,
              "sweep": bench_sweep}


def main(names: list[str]) -> None:
    for name in names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            sys.exit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        BENCHMARKS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
