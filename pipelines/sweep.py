"""`make sweep`: a Hydra multirun that is one tracked, resumable sweep.

annlab's sweeper (``hydra_plugins/annlab_sweeper.py``) hands the grid to :func:`run_grid`. In
the launching process, before any job starts, it composes every job's config through Hydra's
config loader and checks it, creates the store and the experiment, and opens the sweep's parent
run (resuming an earlier one of the same name and grid). Each job is told the parent's id and
the store in its own overrides (``tracking.parent_run_id``, ``tracking.uri``), so jobs on any
launcher or machine nest under it; never through MLFLOW_RUN_ID, which makes MLflow ignore the
parent. When the jobs end the summary goes onto the parent; an interrupted sweep closes the
parent and every orphaned child as KILLED and says how to resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import ipaddress
import itertools
import os
import socket
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from annlab import names, sweep, tracking
from annlab.config import ConfigError, config_hash, run_name, split_sizes, validate
from annlab.names import Status
from pipelines import defer_interrupts, freeze_what_stays, interruptible, joblib_workers

SIZE_ENV = "ANNLAB_SWEEP_SIZE"  # set in each job by Hydra (hydra.job.env_set), for progress


def expand(arguments: list[str]) -> tuple[list[list[str]], dict[str, list[str]]]:
    """Each job's overrides: the product of every comma-separated value list (a key given twice
    keeps its last value, so the command line replaces the sweep config's grid); and the swept
    keys with their values."""
    axes: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            sys.exit(f"error: {override.input_line}: a grid sweeps lists of values "
                     "(key=a,b,c or range(...)), not intervals")
    swept = {key: [o.split("=", 1)[1] for o in values] for key, values in axes.items()
             if len(values) > 1}
    return [list(point) for point in itertools.product(*axes.values())], swept


def quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def warm_up(config: DictConfig, uri: str) -> threading.Thread | None:
    """Start the joblib launcher's worker processes now, in the background, so that their
    start overlaps the launching process's own checks instead of following them; joblib reuses
    the same worker pool for the launch (same arguments).

    The workers fork from the server :func:`pipelines.serve_forks` started, which imported what
    a job needs; a forked worker then only opens the store."""
    workers = joblib_workers(config)
    if workers is None:
        return None
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from joblib import Parallel, delayed

    launcher = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    del launcher["_target_"]
    launcher["backend"] = "loky"  # as the launcher sets it
    process_joblib_cfg(launcher)

    def run() -> None:
        # A cold start is slower, not wrong; that includes workers that a Ctrl-C stopped while
        # they warmed up (the launching process reports that Ctrl-C).
        with contextlib.suppress(BaseException):
            Parallel(**launcher)(delayed(_prepare_worker)(uri) for _ in range(workers))

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread


def finish_warm_up(warming: threading.Thread | None) -> None:
    """Wait for the warm-up: before the launch (one user of the worker pool at a time), and
    before stopping early, since a worker still being forked when this process exits would
    find the pool's semaphores gone and print a traceback under the one-line error."""
    if warming is not None:
        warming.join()


def import_meanwhile(*modules: str) -> None:
    """Import ``modules`` in a daemon thread: what the summary needs loads while the jobs run,
    not after them (~0.3 s off a sweep's summary; ~0.4 s off a study's)."""
    def run() -> None:
        for module in modules:
            with contextlib.suppress(Exception):  # the summary imports it again, and says
                importlib.import_module(module)

    threading.Thread(target=run, name="summary-imports", daemon=True).start()


def _prepare_worker(uri: str) -> int:
    import annlab.pipeline  # noqa: F401  (what every job imports)
    import pipelines.run  # noqa: F401

    if not tracking.is_server(uri):
        # The process keeps its client: a job's first store access (SQLAlchemy, alembic) is
        # paid. A server's client costs nothing to make, and asking a server that does not
        # answer would only hold up the launching process's own refusal (see finish_warm_up).
        tracking.connect(uri)
    freeze_what_stays()
    return os.getpid()


def run_grid(sweeper, arguments: list[str]) -> list[Any]:
    config: DictConfig = sweeper.config
    defer_interrupts()  # while OmegaConf composes and checks the configs
    uri = tracking.resolve_uri(config.tracking.uri, config.paths.store)
    points, swept = expand(arguments)
    *configs, baseline = sweeper.compose_all([*points, []])  # the default config, too
    try:
        for cfg in configs:
            validate(cfg)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    hashes = [config_hash(cfg) for cfg in configs]
    if len(set(hashes)) < len(configs):
        sys.exit("error: the sweep repeats a config; each grid point must differ")
    run_names = [run_name(cfg, baseline) for cfg in configs]
    # A grid over a key that names leave out: tell its runs apart by their config hash.
    run_names = [f"{n}-{h[:6]}" if run_names.count(n) > 1 else n
                 for n, h in zip(run_names, hashes)]
    grid = dict(zip(hashes, run_names))
    n_val = min(split_sizes(c.data.n_samples, c.data.train_fraction, c.data.val_fraction)[1]
                for c in configs)
    name = config.tracking.sweep or "grid"
    grid_hash = hashlib.sha256(",".join(sorted(grid)).encode()).hexdigest()[:16]
    parent_name = f"sweep-{name}-{grid_hash[:8]}"
    interruptible()
    check_cluster(config, uri)
    warming = warm_up(config, uri)  # once the configs passed their checks
    try:
        experiment = tracking.open(uri, config.tracking.experiment)
        parent, resumed = experiment.parent_run(
            {names.SWEEP: name, names.SWEEP_GRID: grid_hash}, parent_name, "pipelines/sweep.py",
            {names.SWEEP_SIZE: str(len(points))})
    except BaseException as err:  # a store refused, a Ctrl-C: nothing launched yet
        finish_warm_up(warming)
        if isinstance(err, tracking.TrackingError):
            sys.exit(f"error: {err}")
        raise
    jobs = [[*point, f"tracking.parent_run_id={parent.run_id}", f"tracking.uri={quoted(uri)}",
             f"tracking.run_name={quoted(label)}", f"+hydra.job.env_set.{SIZE_ENV}={len(points)}"]
            for point, label in zip(points, run_names)]
    sweep_dir = Path(config.hydra.sweep.dir)
    with tracking.interrupts() as received, parent.heartbeat():
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, sweep_dir / "multirun.yaml")
            print(f"{'resuming' if resumed else 'starting'} sweep {name!r}: {len(points)} "
                  f"configs, parent run {parent_name} ({parent.run_id})", flush=True)
            finish_warm_up(warming)
            import_meanwhile("matplotlib.figure", "matplotlib.backends.backend_agg")
            returns = sweeper.launch(jobs)
            experiment.store.check_reachable("the sweep's summary is not written; rerun the "
                                             "same command once it answers")
            summarise(experiment, parent, parent_name, grid, swept, n_val, sweep_dir / "summary",
                      returned(returns))
        except SystemExit:
            raise
        except tracking.TrackingError as err:  # the store went away: it says what is left
            sys.exit(f"error: {err}")
        except BaseException as err:  # Ctrl-C, SIGTERM, a launcher that lost its workers
            reason = stop_reason(err, received, "sweep")
            finish_warm_up(warming)  # if it stopped before the launch: see finish_warm_up
            lines = close_children(experiment, parent, reason, "sweep")
            parent.end(Status.KILLED, f"{reason} before the sweep's summary")
            lines.append(f"  {parent_name} ({parent.run_id}), the sweep's parent")
            stop(lines, "finished configs are not run again")
    return [returns]


def stop_reason(err: BaseException, received: list[str], what: str) -> str:
    """Why a sweep or study stopped early: the signal, else the error."""
    if received:
        return received[0]
    if isinstance(err, KeyboardInterrupt):
        return getattr(err, "reason", "interrupted (Ctrl-C)")
    return f"the {what} stopped: {tracking.first_line(err)}"


def close_children(experiment: tracking.Experiment, parent: tracking.Run, reason: str,
                   what: str) -> list[str]:
    """Close the parent's children left RUNNING as KILLED; one line for each. With the store
    gone, stop at once instead: what is left RUNNING is closed the next time annlab opens it."""
    try:
        experiment.store.check_reachable("its runs left RUNNING are closed the next time "
                                         "annlab opens the store; rerun the same command then")
    except tracking.TrackingError as err:
        sys.exit(f"error: {reason}: {err}")
    closed = experiment.close_stale_children(parent.run_id, f"{reason}; the {what} stopped")
    return [f"{reason}: closed as KILLED:", *(f"  {r.run_name} ({r.run_id})" for r in closed)]


def stop(lines: list[str], resumes: str) -> None:
    """Say what was closed and how to resume; exit as interrupted (130)."""
    # joblib's exit handler deletes the workers' temporary folder again after an interrupted
    # launch removed it, and warns that it failed: noise under the lines that matter.
    warnings.filterwarnings("ignore", "Failed to delete temporary folder", UserWarning)
    lines.append(f"rerun the same command to resume: {resumes}")
    print("\n".join(lines), file=sys.stderr, flush=True)
    sys.exit(130)


def returned(returns) -> dict[str, dict]:
    """The jobs' results by run id (those that ran; a failed job has none)."""
    found = {}
    for ret in returns:
        with contextlib.suppress(Exception):  # the job raised: its run says why
            if (result := ret.return_value).get("run_id"):
                found[result["run_id"]] = result
    return found


def summarise(experiment: tracking.Experiment, parent: tracking.Run, parent_name: str,
              grid: dict[str, str], swept: dict[str, list[str]], n_val: int, out: Path,
              results: dict[str, dict]) -> None:
    """The children's table and figures onto the parent, which ends FINISHED if every config
    finished, else FAILED naming those that did not. The curves and final boundaries come from
    the jobs' ``results``, else (configs done by an earlier attempt) from the store."""
    experiment.close_stale_children(parent.run_id, "its job ended without closing the run")
    table = sweep.summary_table(experiment.children(parent.run_id), grid, list(swept))
    out.mkdir(parents=True, exist_ok=True)
    sweep.write_csv(table, out / names.SWEEP_SUMMARY_FILE, n_val)
    parent.log_params({key: ",".join(values) for key, values in swept.items()})
    parent.log_artifact(out / names.SWEEP_SUMMARY_FILE)
    finished = table[table["status"] == Status.FINISHED]
    in_order = sweep.grid_order(finished)
    store = experiment.store
    figures = [sweep.plot_heatmaps(table, out / names.SWEEP_FIGURE_FILES["heatmaps"])]
    curves = {r.run_name: _val_curve(store.run(r.run_id), results.get(r.run_id))
              for r in in_order.itertuples()}
    figures.append(sweep.plot_curves(curves, out / names.SWEEP_FIGURE_FILES["curves"]))
    with tempfile.TemporaryDirectory() as tmp:
        finals = {r.run_name: _final_boundary(store.run(r.run_id), results.get(r.run_id),
                                              Path(tmp) / r.run_id)
                  for r in in_order.itertuples()}
        if finals:
            figures.append(sweep.tile_images(finals,
                                             out / names.SWEEP_FIGURE_FILES["boundaries"]))
    for path in figures:
        parent.log_artifact(path, names.FIGURES_DIR)
    if len(finished):
        best = finished.iloc[0]
        parent.log_metrics({names.BEST_VAL_MISCLASSIFICATION: best["val_misclassification"]})
        parent.set_tags({names.BEST_RUN: best["run_id"], names.BEST_RUN_NAME: best["run_name"]})
    parent.set_note(sweep.describe(parent_name, swept, table))
    failed = table[table["status"] != Status.FINISHED]
    reason = (f"{len(failed)} of {len(table)} configs did not finish: "
              + ", ".join(failed["run_name"])) if len(failed) else None
    parent.end(Status.FAILED if reason else Status.FINISHED, reason)
    shown = table[["run_name", "status", "train_accuracy", "val_accuracy", "test_accuracy"]]
    print("\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(f"\nsweep parent run {parent_name} ({parent.run_id}): summary in its figures/ and "
          f"{names.SWEEP_SUMMARY_FILE}; browse with `make ui`", flush=True)
    if reason:
        sys.exit(f"error: {reason}")


def _val_curve(run: tracking.Run, result: dict | None) -> pd.Series:
    if result and result.get("val_curve"):
        curve = result["val_curve"]
        return pd.Series(curve, index=range(1, len(curve) + 1))
    return run.metric_history("val_misclassification")


def _final_boundary(run: tracking.Run, result: dict | None, dst: Path) -> Path:
    if result and result.get("boundary_final"):
        dst.mkdir(parents=True)
        path = dst / names.FIGURE_FILES["boundary_final"]
        path.write_bytes(result["boundary_final"])
        return path
    return run.download(f"{names.FIGURES_DIR}/{names.FIGURE_FILES['boundary_final']}", dst)


def local_addresses() -> set[str]:
    """This machine's addresses (loopback included), as other nodes would name it."""
    names = {socket.gethostname(), "localhost"}
    found = {"127.0.0.1", "::1"}
    for name in names:
        with contextlib.suppress(OSError):
            found |= {info[4][0] for info in socket.getaddrinfo(name, None)}
    return found


def check_cluster(config: DictConfig, uri: str) -> None:
    """Refuse, before any job starts, a Ray cluster with nodes on other machines when the
    store is one only this machine can reach (a sqlite file, a server on loopback)."""
    init = OmegaConf.select(config, "hydra.launcher.ray.init")
    if init is None or not init.get("address"):
        return  # not Ray, or a local instance: its jobs see what this machine sees
    host = urlparse(uri).hostname
    if tracking.is_server(uri) and not ipaddress_is_loopback(host):
        return  # a server the nodes can reach
    import ray

    ray.init(**OmegaConf.to_container(init, resolve=True))  # the launcher reuses it
    here = local_addresses()
    remote = sorted({n["NodeManagerAddress"] for n in ray.nodes()
                     if n["Alive"] and n["NodeManagerAddress"] not in here})
    if remote:
        sys.exit(f"error: the Ray cluster at {init.address} has nodes on other machines "
                 f"({', '.join(remote)}) that cannot reach the store {uri}, which only this "
                 "machine sees; start `make server` (on a PostgreSQL DB) and set "
                 "MLFLOW_TRACKING_URI=http://<this machine>:<port> before the sweep")


def ipaddress_is_loopback(host: str | None) -> bool:
    if host in (None, "localhost"):
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False
