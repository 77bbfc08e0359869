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
from mlflow.entities import Metric, Param, RunStatus, RunTag
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
    """SIGTERM, turned into an interrupt so the run is closed as KILLED."""


def _on_sigterm(signum, frame):
    raise _Interrupted("terminated (SIGTERM)")


class Run:
    """Records of one MLflow run. Everything goes through batched or single-file calls."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: Mapping[str, object]) -> None:
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, object]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()
                                                 if v is not None])

    def log_metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
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
    in_main = _main()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        yield handle
    except KeyboardInterrupt as err:
        _close(client, handle.run_id, RunStatus.KILLED, str(err) or "interrupted (Ctrl-C)")
        raise
    except BaseException as err:
        _close(client, handle.run_id, RunStatus.FAILED, str(err) or type(err).__name__)
        raise
    else:
        client.set_terminated(handle.run_id, RunStatus.to_string(RunStatus.FINISHED))
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _close(client: MlflowClient, run_id: str, status: int, reason: str) -> None:
    # A second interrupt here must not leave the run RUNNING: ignore it until we are done.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main() else None
    try:
        client.set_tag(run_id, FAILURE_TAG, reason[:5000])
        client.set_terminated(run_id, RunStatus.to_string(status))
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)


def _main() -> bool:
    return threading.current_thread() is threading.main_thread()
