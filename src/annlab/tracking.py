"""The one module that talks to MLflow: the store, the experiment, and each run's records.

Runs are driven through ``MlflowClient`` with explicit run ids (no fluent global state), so a
process can hold several runs, a sweep's parent among them, without one leaking into another.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from annlab.provenance import REPO_ROOT

DEFAULT_STORE = REPO_ROOT / "outputs" / "mlflow.db"
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
FAILURE_TAG = "annlab.failure"


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which and why."""


def resolve_uri(configured: str | None = None) -> str:
    """``tracking.uri`` if set, else ``$MLFLOW_TRACKING_URI``, else the embedded sqlite store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE}"


@cache
def client_for(uri: str) -> MlflowClient:
    """One client per store and process: opening a sqlite store costs about a second."""
    return MlflowClient(uri)


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///").split("?")[0]) if uri.startswith("sqlite:///") \
        else None


def _check_server(uri: str) -> None:
    """Fail within seconds, not after MLflow's minutes of retries, when nothing answers."""
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
    except requests.RequestException as err:
        raise TrackingError(f"tracking server {uri} is unreachable ({type(err).__name__}); "
                            "start it or point MLFLOW_TRACKING_URI elsewhere") from err


def prepare(uri: str, experiment: str) -> str:
    """Create the store (if new) and the experiment (if new) once; return the experiment id.

    Call this in the launching process before any job starts: a new sqlite store first opened
    by parallel processes can be corrupted by racing schema migrations, and racing experiment
    creation can file runs under "Default".
    """
    if urlparse(uri).scheme in ("http", "https"):
        _check_server(uri)
    db = _sqlite_path(uri)
    artifact_location = None
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (db.parent / "mlartifacts").as_uri()
    client = client_for(uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            try:
                return client.create_experiment(experiment, artifact_location, EXPERIMENT_TAGS)
            except MlflowException:  # created meanwhile by someone else: use theirs
                found = client.get_experiment_by_name(experiment)
        if found.lifecycle_stage == "deleted":
            raise TrackingError(f"experiment {experiment!r} is deleted in {uri}; restore it "
                                "(mlflow experiments restore) or choose another name")
        for key, value in EXPERIMENT_TAGS.items():
            if found.tags.get(key) != value:
                client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    except MlflowException as err:
        raise TrackingError(f"tracking store {uri}: {err.message}") from err


class _Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; the run is closed as KILLED."""


_SIGNALS = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}
_received: list[str] = []  # signals seen during the current run, even if a library wrapped them


def _on_signal(signum, frame):
    _received.append(_SIGNALS[signum])
    raise _Interrupted(_SIGNALS[signum])


class Run:
    """Records of one MLflow run. Everything goes through batched or single-file calls."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: Mapping[str, object]) -> None:
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, object]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()
                                                 if v is not None])

    def log_metrics(self, values: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0)
                                                    for k, v in values.items()])

    def log_history(self, history: pd.DataFrame) -> None:
        """Every column as a per-step metric (step = the frame's index), in batched requests."""
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(value), now, int(step))
                   for name, column in history.items() for step, value in column.items()]
        self.client.log_batch(self.run_id, metrics=metrics)  # MLflow chunks to its limits

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_model(self, weights: Path, input_example, output_example) -> None:
        """An MLflow pyfunc model whose only data is the ``.npz`` weights (nothing pickled)."""
        import mlflow.pyfunc
        from mlflow.models import infer_signature

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model"
            mlflow.pyfunc.save_model(
                path, loader_module="annlab.model_io", data_path=str(weights),
                signature=infer_signature(input_example, output_example),
                input_example=input_example,
                pip_requirements=["annlab", "numpy", "scikit-learn", "scipy"])
            self.client.log_artifacts(self.run_id, str(path), "model")


@contextmanager
def tracked_run(uri: str, experiment_id: str, run_name: str, tags: Mapping[str, str],
                parent_run_id: str | None = None) -> Iterator[Run]:
    """A run that always ends in a terminal state.

    FINISHED on success; FAILED with the reason in ``annlab.failure`` on an error; KILLED on
    Ctrl-C or SIGTERM. The exception is re-raised for the caller to report.
    """
    client = client_for(uri)
    all_tags = {k: str(v) for k, v in tags.items() if v is not None}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    try:
        run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
    except MlflowException as err:
        raise TrackingError(f"cannot create a run in {uri}: {err.message}") from err
    handle = Run(client, run.info.run_id)
    previous = {s: signal.signal(s, _on_signal) for s in _SIGNALS} if _main() else {}
    _received.clear()
    try:
        yield handle
    except BaseException as err:
        # An interrupt that surfaced as another exception (a library wrapped it) still KILLs.
        if isinstance(err, KeyboardInterrupt) or _received:
            reason = _received[0] if _received else "interrupted (Ctrl-C)"
            _close(uri, handle.run_id, "KILLED", reason)
            if not isinstance(err, KeyboardInterrupt):
                raise _Interrupted(reason) from err
        else:
            _close(uri, handle.run_id, "FAILED", str(err) or type(err).__name__)
        raise
    else:
        client.set_terminated(handle.run_id, "FINISHED")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _close(uri: str, run_id: str, status: str, reason: str) -> None:
    # A second interrupt here must not leave the run RUNNING: ignore it until we are done.
    old = {s: signal.signal(s, signal.SIG_IGN) for s in _SIGNALS} if _main() else {}
    try:
        end_run(uri, run_id, status, reason)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _main() -> bool:
    return threading.current_thread() is threading.main_thread()


# -- sweeps -----------------------------------------------------------------------------------

SWEEP_TAG = "annlab.sweep"
GRID_TAG = "annlab.sweep_grid"
CONFIG_HASH_TAG = "annlab.config_hash"


def _search(uri: str, experiment_id: str, filter_string: str):
    return client_for(uri).search_runs([experiment_id], filter_string, max_results=50_000)


def open_sweep_parent(uri: str, experiment_id: str, name: str, grid_hash: str, run_name: str,
                      tags: Mapping[str, str]) -> tuple[str, bool]:
    """The sweep's parent run: the earlier one of the same name and grid if there is one (it is
    resumed, set RUNNING again), else a new one. Returns (run id, resumed)."""
    client = client_for(uri)
    found = [r for r in _search(uri, experiment_id, f"tags.`{GRID_TAG}` = '{grid_hash}' and "
                                                    f"tags.`{SWEEP_TAG}` = '{name}'")
             if "mlflow.parentRunId" not in r.data.tags]
    if found:
        latest = max(found, key=lambda r: r.info.start_time)
        client.update_run(latest.info.run_id, status="RUNNING")
        if FAILURE_TAG in latest.data.tags:
            client.delete_tag(latest.info.run_id, FAILURE_TAG)
        return latest.info.run_id, True
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={SWEEP_TAG: name, GRID_TAG: grid_hash, **tags})
    return run.info.run_id, False


def _record(run) -> dict:
    """A run as plain data: what the rest of annlab reads, without MLflow's types."""
    return {"run_id": run.info.run_id, "run_name": run.info.run_name,
            "status": run.info.status, "start_time": run.info.start_time,
            "params": dict(run.data.params), "metrics": dict(run.data.metrics),
            "tags": dict(run.data.tags)}


def finished_child(uri: str, experiment_id: str, parent_run_id: str, config_hash: str
                   ) -> dict | None:
    """A FINISHED child of the parent with this config hash, or None."""
    runs = _search(uri, experiment_id, f"tags.`mlflow.parentRunId` = '{parent_run_id}' and "
                                       f"tags.`{CONFIG_HASH_TAG}` = '{config_hash}' and "
                                       "attributes.status = 'FINISHED'")
    return _record(runs[0]) if runs else None


def children(uri: str, experiment_id: str, parent_run_id: str) -> list[dict]:
    return [_record(r) for r in
            _search(uri, experiment_id, f"tags.`mlflow.parentRunId` = '{parent_run_id}'")]


def metric_history(uri: str, run_id: str, key: str) -> pd.Series:
    """A metric by step; where a step was logged more than once, its latest value."""
    points = {m.step: m.value for m in sorted(client_for(uri).get_metric_history(run_id, key),
                                              key=lambda m: (m.step, m.timestamp))}
    return pd.Series(points, name=key, dtype=float)


def download(uri: str, run_id: str, artifact_path: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client_for(uri).download_artifacts(run_id, artifact_path, str(dst)))
    except (MlflowException, OSError) as err:
        raise TrackingError(f"run {run_id}: cannot read artifact {artifact_path}: {err}") from err


def load_run(uri: str, run_id: str) -> dict:
    """A run as plain data, with its experiment id; a clear error for an unknown id."""
    try:
        run = client_for(uri).get_run(run_id)
    except MlflowException as err:
        raise TrackingError(f"no run with id {run_id!r} in {uri}") from err
    return {**_record(run), "experiment_id": run.info.experiment_id}


def end_run(uri: str, run_id: str, status: str, reason: str | None = None) -> None:
    """Terminate a run by status name, recording ``reason`` as its failure."""
    client = client_for(uri)
    if reason:
        client.set_tag(run_id, FAILURE_TAG, reason[:5000])
    client.set_terminated(run_id, status)


def kill_stale_children(uri: str, experiment_id: str, parent_run_id: str, reason: str
                        ) -> list[str]:
    """End every child still RUNNING (its worker died or was interrupted) as KILLED."""
    stale = [r["run_id"] for r in children(uri, experiment_id, parent_run_id)
             if r["status"] == "RUNNING"]
    for run_id in stale:
        end_run(uri, run_id, "KILLED", reason)
    return stale
