"""The one module that talks to MLflow: the store, the experiment, and each run's records.

``tracking.open(uri, experiment)`` gives an :class:`Experiment` handle (store, client and id
together); runs, sweeps and their children are asked of it. Runs are driven through
``MlflowClient`` with explicit run ids (no fluent global state), so a process can hold several
runs, a sweep's parent among them, without one leaking into another. Every tag, status and
artifact name comes from :mod:`annlab.names`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import ExclusiveFileLock
from sqlalchemy.exc import SQLAlchemyError

from annlab import names
from annlab.names import Status
from annlab.provenance import ProcessId, Provenance, git_state, user

EXPERIMENT_TAGS = {names.EXPERIMENT_KIND: "custom_model_development"}
file_lock = ExclusiveFileLock  # MLflow's flock-based lock, for other stores' first creation
# Quiet by default: MLflow's INFO lines (schema creation, signature checks) are not for users.
logging.getLogger("mlflow").setLevel(logging.WARNING)
# A tracking server that goes away: MLflow's own retries absorb an outage of up to ~30 s (a
# restart) and then fail with the server's address, instead of its default minutes. Quiet: no
# progress bars, no "View run at" lines. Settings the user exported win.
for _name, _value in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
                      "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                      "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                      "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                      "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}.items():
    os.environ.setdefault(_name, _value)
logging.getLogger("urllib3").setLevel(logging.ERROR)  # MLflow's retries say the rest


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which and why."""


def resolve_uri(configured: str | None, default: str) -> str:
    """``tracking.uri`` if set, else ``$MLFLOW_TRACKING_URI``, else ``default`` (paths.store)."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default


# -- interrupts ------------------------------------------------------------------------------

class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; ``reason`` says which, the message what was done about it."""

    def __init__(self, reason: str, message: str | None = None):
        super().__init__(message or reason)
        self.reason = reason


_SIGNALS = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def interrupts() -> Iterator[list[str]]:
    """Within, SIGINT and SIGTERM raise :class:`Interrupted`; yields the reasons received,
    which stay known even if a library catches the exception and raises another."""
    received: list[str] = []

    def on_signal(signum, frame):
        received.append(_SIGNALS[signum])
        raise Interrupted(_SIGNALS[signum])

    previous = {s: signal.signal(s, on_signal) for s in _SIGNALS} if _main_thread() else {}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """Closing a run must not be cut short by a second Ctrl-C: ignore it until done."""
    previous = ({s: signal.signal(s, signal.SIG_IGN) for s in _SIGNALS} if _main_thread()
                else {})
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- what is read back -----------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """A run as plain data: what the rest of annlab reads, without MLflow's types."""

    run_id: str
    run_name: str
    status: Status
    experiment_id: str
    start_time: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    datasets: dict[str, str]  # context (train, validation, test) -> digest
    model_ids: tuple[str, ...]  # its logged models

    @classmethod
    def of(cls, run) -> Record:
        inputs = run.inputs.dataset_inputs if run.inputs else []
        datasets = {t.value: d.dataset.digest for d in inputs for t in d.tags
                    if t.key == names.DATASET_CONTEXT}
        outputs = run.outputs.model_outputs if run.outputs else []
        return cls(run.info.run_id, run.info.run_name, Status(run.info.status),
                   run.info.experiment_id, run.info.start_time, dict(run.data.params),
                   dict(run.data.metrics), dict(run.data.tags), datasets,
                   tuple(o.model_id for o in outputs))

    config_hash = property(lambda self: self.tags.get(names.CONFIG_HASH))
    data_hash = property(lambda self: self.tags.get(names.DATA_HASH))
    failure = property(lambda self: self.tags.get(names.FAILURE))
    parent_run_id = property(lambda self: self.tags.get(names.PARENT_RUN))
    git_commit = property(lambda self: self.tags.get(names.GIT_COMMIT))
    git_dirty = property(lambda self: self.tags.get(names.GIT_DIRTY) == "True")
    lock_hash = property(lambda self: self.tags.get(names.LOCK_HASH))
    platform = property(lambda self: self.tags.get(names.PLATFORM))
    pruned_at = property(lambda self: int(self.tags[names.PRUNED_AT])
                         if names.PRUNED_AT in self.tags else None)


# -- the store -------------------------------------------------------------------------------

STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
HEARTBEAT_SECONDS = 60
SHARED = "shared"  # annlab.process of a run that several processes write (a study's parent)
STALE_AFTER_SECONDS = 10 * HEARTBEAT_SECONDS  # a run on another machine silent this long died


@cache
def _client(uri: str) -> MlflowClient:
    """One client per store and process: opening a sqlite store costs about a second."""
    return MlflowClient(uri)


def _sqlite_path(uri: str) -> Path | None:
    return (Path(uri.removeprefix("sqlite:///").split("?")[0]) if uri.startswith("sqlite:///")
            else None)


def _check_uri(uri: str) -> None:
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in STORE_SCHEMES or (scheme == "sqlite" and not uri.startswith("sqlite:///")):
        raise TrackingError(f"tracking URI {uri!r} is not a tracking store; allowed: "
                            "sqlite:///<path>, http(s)://<mlflow server>, "
                            "postgresql://..., mysql://..., mssql://...")


def _check_server(uri: str) -> None:
    """Fail within seconds, not after MLflow's minutes of retries, when nothing answers."""
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
    except requests.RequestException as err:
        raise TrackingError(f"tracking server {uri} is unreachable ({type(err).__name__}); "
                            "start it or point MLFLOW_TRACKING_URI elsewhere") from err


def _build_whole(target: Path, build) -> None:
    """Make ``target`` with ``build(path)`` beside it and rename it into place, under a lock:
    several processes may ask at once, and a half-built file must never be left at ``target``."""
    if target.exists():
        return
    with file_lock(f"{target}.lock"):
        if target.exists():
            return
        tmp = target.with_name(f".{target.name}.{os.getpid()}.new")
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def _empty_store() -> Path:
    """A new, empty store of this MLflow version, made once by MLflow's own schema migrations
    (~6 s) and copied for every new store after it (a millisecond)."""
    from mlflow.version import VERSION

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "annlab"
    template = cache / f"mlflow-{VERSION}-empty.db"
    cache.mkdir(parents=True, exist_ok=True)
    _build_whole(template, lambda tmp: MlflowClient(f"sqlite:///{tmp}").search_experiments(
        max_results=1))
    return template


def _open_sqlite(db: Path, uri: str) -> None:
    """Create a new store whole or not at all; refuse, in seconds, a file that is no store.

    Several processes may open a new store at once (two terminals, a script): one copies it
    into place under a lock, the others wait and use it. Building it in place could leave a
    half-built file behind that breaks every later run.
    """
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        if not db.exists():
            _build_whole(db, lambda tmp: shutil.copyfile(_empty_store(), tmp))
    except (OSError, MlflowException, SQLAlchemyError) as err:
        raise TrackingError(f"cannot create the tracking store {db}: {first_line(err)}"
                            ) from err
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
            con.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error as err:
        raise TrackingError(f"tracking store {uri} is not a usable MLflow store ({err}); move "
                            "the file aside (annlab then creates a new one) or set "
                            "tracking.uri / MLFLOW_TRACKING_URI to another store") from err


def _duplicate_row(err: BaseException) -> bool:
    """A uniqueness violation, as sqlite, PostgreSQL or a server relaying them word it."""
    text = str(err).lower()
    return any(m in text for m in ("unique constraint", "uniqueviolation", "duplicate key"))


def first_line(err: BaseException) -> str:
    """An exception in one line, for messages."""
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return text.strip().splitlines()[0]


def _liveness_tags() -> dict[str, str]:
    """Who writes a run: tags that let a later process tell whether the writer still lives."""
    return {names.PROCESS: str(ProcessId.current()), names.HEARTBEAT: str(int(time.time()))}


def is_server(uri: str) -> bool:
    """Whether ``uri`` names a tracking server (rather than a database the process opens)."""
    return urlparse(uri).scheme in ("http", "https")


class Store:
    """One tracking store (a sqlite file or a server) as this process sees it."""

    def __init__(self, uri: str):
        self.uri = uri
        _check_uri(uri)
        if is_server(uri):
            _check_server(uri)
        elif (db := _sqlite_path(uri)) is not None:
            _open_sqlite(db, uri)
        self.client = _client(uri)

    def check_reachable(self, consequence: str, cause: BaseException | None = None) -> None:
        """For a server store: raise :class:`TrackingError` at once (naming the server and
        ``consequence``) if it does not answer, instead of spending MLflow's retry window on
        each further call."""
        if is_server(self.uri):
            try:
                _check_server(self.uri)
            except TrackingError as err:
                raise TrackingError(f"{err}; {consequence}") from (cause or err)

    def experiment(self, name: str) -> Experiment:
        """The experiment, created (with its tags) if new; runs its dead processes left
        RUNNING are closed as KILLED first.

        Call this in the launching process before any job starts: racing experiment creation
        can file runs under "Default".
        """
        db = _sqlite_path(self.uri)
        artifact_location = (db.parent / "mlartifacts").as_uri() if db is not None else None
        client = self.client
        try:
            found = client.get_experiment_by_name(name)
            if found is None:
                try:
                    experiment_id = client.create_experiment(name, artifact_location,
                                                             EXPERIMENT_TAGS)
                    return Experiment(self, experiment_id, name)
                except MlflowException:  # created meanwhile by someone else: use theirs
                    found = client.get_experiment_by_name(name)
            if found.lifecycle_stage == "deleted":
                raise TrackingError(f"experiment {name!r} is deleted in {self.uri}; restore it "
                                    "(mlflow experiments restore) or choose another name")
            for key, value in EXPERIMENT_TAGS.items():
                if found.tags.get(key) != value:
                    client.set_experiment_tag(found.experiment_id, key, value)
            experiment = Experiment(self, found.experiment_id, name)
            experiment.close_dead_runs()
            return experiment
        except (MlflowException, SQLAlchemyError) as err:
            raise TrackingError(f"tracking store {self.uri}: {first_line(err)}") from err

    def experiment_by_id(self, experiment_id: str) -> Experiment:
        try:
            return Experiment(self, experiment_id,
                              self.client.get_experiment(experiment_id).name)
        except MlflowException as err:
            raise TrackingError(f"no experiment with id {experiment_id!r} in {self.uri}"
                                ) from err

    def run(self, run_id: str) -> Run:
        """An existing run (its :meth:`Run.record` says clearly when there is none)."""
        return Run(self, run_id)


def connect(uri: str) -> Store:
    return Store(uri)


def open(uri: str, experiment: str) -> Experiment:
    """The experiment ``experiment`` of the store at ``uri``, created if new."""
    return connect(uri).experiment(experiment)


class Experiment:
    """One experiment of a store: where runs, sweeps and their children are created and found."""

    def __init__(self, store: Store, experiment_id: str, name: str):
        self.store, self.id, self.name = store, experiment_id, name

    @property
    def uri(self) -> str:
        return self.store.uri

    @contextmanager
    def start_run(self, run_name: str, provenance: Provenance | None = None, *,
                  parent_run_id: str | None = None, sweep: str | None = None,
                  tags: Mapping[str, object] | None = None) -> Iterator[Run]:
        """A run that always ends in a terminal state.

        FINISHED on success; FAILED with the reason in ``annlab.failure`` on an error; KILLED on
        Ctrl-C or SIGTERM. The exception is re-raised for the caller to report.
        """
        all_tags = dict(tags or {})
        if provenance is not None:
            all_tags |= {names.CONFIG_HASH: provenance.config_hash,
                         names.SOURCE_NAME: provenance.entry_point,
                         names.SOURCE_TYPE: "LOCAL", names.USER: provenance.user,
                         names.GIT_COMMIT: provenance.git.commit,
                         names.GIT_DIRTY: provenance.git.dirty,
                         names.LOCK_HASH: provenance.lock_hash,
                         names.PLATFORM: provenance.platform["fingerprint"]}
        all_tags |= {names.PARENT_RUN: parent_run_id, names.SWEEP: sweep, **_liveness_tags()}
        try:
            info = self.store.client.create_run(self.id, run_name=run_name, tags={
                k: str(v) for k, v in all_tags.items() if v is not None}).info
        except MlflowException as err:
            raise TrackingError(f"cannot create a run in {self.uri}: {err.message}") from err
        run = Run(self.store, info.run_id)
        with interrupts() as received, run.heartbeat():
            try:
                if provenance is not None:
                    run.log_dict(provenance.environment(), names.ENVIRONMENT_FILE)
                    if provenance.git.diff:
                        run.log_text(provenance.git.diff, names.GIT_DIFF_FILE)
                yield run
            except BaseException as err:
                self.store.check_reachable(f"run {run_name} ({run.run_id}) stays RUNNING until "
                                           "annlab next opens the store", cause=err)
                # An interrupt that surfaced as another exception (a library wrapped it) still
                # KILLs the run.
                if isinstance(err, KeyboardInterrupt) or received:
                    reason = (received[0] if received else
                              getattr(err, "reason", _SIGNALS[signal.SIGINT]))
                    run.end(Status.KILLED, reason)
                    raise Interrupted(reason, f"{reason}: run {run_name} ({run.run_id}) closed "
                                              "as KILLED") from err
                else:
                    run.end(Status.FAILED, str(err) or type(err).__name__)
                raise
            else:
                run.end(Status.FINISHED)

    def search(self, filter_string: str) -> list[Record]:
        runs = self.store.client.search_runs([self.id], filter_string, max_results=50_000)
        return [Record.of(r) for r in runs]

    def close_dead_runs(self) -> list[Record]:
        """Close as KILLED every RUNNING run whose process is gone: killed with SIGKILL,
        crashed, or on a machine that has been silent for STALE_AFTER_SECONDS."""
        now, dead = time.time(), []
        for record in self.search(f"attributes.status = '{Status.RUNNING}'"):
            writer = record.tags.get(names.PROCESS)
            if writer is None:  # not written by annlab: nothing to tell by
                continue
            process = ProcessId.parse(writer)
            alive = process.alive() if process is not None else None
            if alive is None:  # another machine, or shared by several: judge by the heartbeat
                alive = now - float(record.tags.get(names.HEARTBEAT) or 0) < STALE_AFTER_SECONDS
            if not alive:
                who = (f"its process (pid {process.pid} on {process.host})" if process
                       else "the processes writing it")
                Run(self.store, record.run_id).end(
                    Status.KILLED, f"{who} ended without closing the run: killed with SIGKILL, "
                    "crashed, or its machine was lost; closed the next time annlab opened the "
                    "store")
                dead.append(record)
        if dead:
            print(f"note: closed {len(dead)} run(s) left RUNNING by a process that is gone, as "
                  "KILLED: " + ", ".join(f"{r.run_name} ({r.run_id})" for r in dead),
                  file=sys.stderr)
        return dead

    def parent_run(self, key: Mapping[str, str], run_name: str, entry_point: str,
                   tags: Mapping[str, str] | None = None) -> tuple[Run, bool]:
        """A sweep's or a study's parent run: the latest top-level run whose tags match
        ``key`` (resumed: set RUNNING again, its failure cleared), else a new one with ``key``
        and ``tags``, its source ``entry_point``. Returns (run, resumed)."""
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in key.items())
        found = [r for r in self.search(query) if r.parent_run_id is None]
        client = self.store.client
        if found:
            latest = max(found, key=lambda r: r.start_time)
            parent = Run(self.store, latest.run_id)
            parent.resume()
            return parent, True
        source = {names.SOURCE_NAME: entry_point, names.SOURCE_TYPE: "LOCAL",
                  names.USER: user(), names.GIT_COMMIT: git_state().commit}
        info = client.create_run(self.id, run_name=run_name, tags={
            k: str(v) for k, v in {**key, **(tags or {}), **source, **_liveness_tags()}.items()
            if v is not None}).info
        return Run(self.store, info.run_id), False

    def children(self, parent_run_id: str) -> list[Record]:
        return self.search(f"tags.`{names.PARENT_RUN}` = '{parent_run_id}'")

    def finished_child(self, parent_run_id: str, config_hash: str) -> Record | None:
        """A FINISHED child of the parent with this config hash, or None."""
        runs = self.search(f"tags.`{names.PARENT_RUN}` = '{parent_run_id}' and "
                           f"tags.`{names.CONFIG_HASH}` = '{config_hash}' and "
                           f"attributes.status = '{Status.FINISHED}'")
        return runs[0] if runs else None

    def close_stale_children(self, parent_run_id: str, reason: str) -> list[Record]:
        """End every child still RUNNING (its worker died or was interrupted) as KILLED."""
        stale = [r for r in self.children(parent_run_id) if r.status == Status.RUNNING]
        for record in stale:
            Run(self.store, record.run_id).end(Status.KILLED, reason)
        return stale


class Run:
    """One MLflow run: what is logged to it (in batched or single-file calls) and read back."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id

    @cached_property
    def client(self) -> MlflowClient:
        return self.store.client

    def record(self) -> Record:
        try:
            return Record.of(self.client.get_run(self.run_id))
        except MlflowException as err:
            raise TrackingError(f"no run with id {self.run_id!r} in {self.store.uri}") from err

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

    def set_note(self, markdown: str) -> None:
        """The run's description, shown on its page in the UI."""
        self.set_tags({names.NOTE: markdown})

    def log_datasets(self, name: str, splits: Mapping[str, tuple], digests: Mapping[str, str],
                     source: Mapping[str, object]) -> None:
        """Each split as an MLflow dataset input, its context the split's name (the UI's
        Dataset column and filter); ``source`` says how to make the data again."""
        from mlflow.data import from_numpy
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for context, (X, y) in splits.items():
            data = from_numpy(X, source=CodeDatasetSource(dict(source)), targets=y, name=name,
                              digest=digests[context])
            inputs.append(DatasetInput(Dataset(**data.to_dict()),
                                       [InputTag(names.DATASET_CONTEXT, context)]))
        try:
            self.client.log_inputs(self.run_id, datasets=inputs)
        except MlflowException as err:
            # MLflow's store looks each dataset up, then inserts the missing ones: two runs
            # logging the same data at once (a sweep's first jobs) both miss it, and the later
            # insert breaks the uniqueness of (experiment, name, digest) and is rolled back.
            # The dataset exists now, so the same call links it.
            if not _duplicate_row(err):
                raise
            self.client.log_inputs(self.run_id, datasets=inputs)

    def log_model(self, weights: Path, input_example, output_example,
                  metrics: Mapping[str, float]) -> str:
        """The run's MLflow 3 logged model (the UI's Models tab; ``runs:/<id>/model``), a
        pyfunc model whose only data is the ``.npz`` weights (nothing pickled), with the run's
        final ``metrics`` linked to it. Returns its model id."""
        import mlflow.pyfunc
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model, infer_signature

        record = self.record()
        model = self.client.create_logged_model(
            record.experiment_id, names.MODEL_NAME, source_run_id=self.run_id,
            params=record.params, model_type="annlab.NeuralNetClassifier")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / names.MODEL_NAME
            mlflow.pyfunc.save_model(
                path, loader_module="annlab.model_io", data_path=str(weights),
                signature=infer_signature(input_example, output_example),
                input_example=input_example,
                pip_requirements=["annlab", "numpy", "scikit-learn", "scipy"],
                mlflow_model=Model(artifact_path=model.artifact_location,
                                   model_uuid=model.model_id, run_id=self.run_id,
                                   model_id=model.model_id))
            self.client.log_model_artifacts(model.model_id, str(path))
        self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step=0)])
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, 0, model_id=model.model_id) for k, v in metrics.items()])
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        return model.model_id

    def log_images(self, key: str, images: Mapping[int, Path]) -> None:
        """Images by step (MLflow's image charts: one slider over the steps of many runs)."""
        from PIL import Image

        for step, path in images.items():
            with Image.open(path) as image:
                self.client.log_image(self.run_id, image.convert("RGB"), key=key, step=step)

    def images(self, key: str, dst: Path) -> dict[int, Path]:
        """The full-size images logged under ``key``, by step (their file names carry MLflow's
        own time stamps and ids, so they are found by key and step)."""
        found = {}
        for entry in self.client.list_artifacts(self.run_id, "images"):
            parts = Path(entry.path).name.split("+")
            if parts[0] == key and len(parts) >= 4 and entry.path.endswith(".png"):
                found[int(parts[2])] = self.download(entry.path, dst)
        return found

    def metric_history(self, key: str) -> pd.Series:
        """A metric by step; where a step was logged more than once, its latest value."""
        points = {m.step: m.value for m in sorted(self.client.get_metric_history(
            self.run_id, key), key=lambda m: (m.step, m.timestamp))}
        return pd.Series(points, name=key, dtype=float)

    def download(self, artifact_path: str, dst: Path) -> Path:
        dst.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(self.run_id, artifact_path, str(dst)))
        except (MlflowException, OSError) as err:
            raise TrackingError(f"run {self.run_id}: cannot read artifact {artifact_path}: "
                                f"{err}") from err

    @contextmanager
    def heartbeat(self) -> Iterator[None]:
        """While inside, renew the run's heartbeat tag every HEARTBEAT_SECONDS (from a daemon
        thread), so that annlab elsewhere can tell this process still works on it."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                # A missed beat is no failure; the run itself reports a store that went away.
                with suppress(Exception):
                    self.client.set_tag(self.run_id, names.HEARTBEAT, str(int(time.time())))

        threading.Thread(target=beat, daemon=True, name=f"heartbeat-{self.run_id}").start()
        try:
            yield
        finally:
            stop.set()

    def resume(self) -> None:
        """RUNNING again, written by this process (a resumed sweep or study)."""
        record = self.record()
        self.client.update_run(self.run_id, status=Status.RUNNING)
        if record.failure is not None:
            self.client.delete_tag(self.run_id, names.FAILURE)
        self.set_tags(_liveness_tags())

    def share(self) -> None:
        """Leave the run RUNNING for other processes to finish (a study's other workers): it
        no longer names this process, so only a silent heartbeat can close it."""
        self.set_tags({names.PROCESS: SHARED})

    def download_model_file(self, path: str, dst: Path) -> Path:
        """A file of the run's logged model. (Through the model's own artifact location:
        MLflow 3.17 resolves ``runs:/<id>/model`` only against the global tracking URI.)"""
        from mlflow.artifacts import download_artifacts

        dst.mkdir(parents=True, exist_ok=True)
        try:
            (model_id, *_) = self.record().model_ids or (None,)
            if model_id is None:
                raise TrackingError(f"run {self.run_id} has no logged model")
            location = self.client.get_logged_model(model_id).artifact_location
            return Path(download_artifacts(f"{location}/{path}", dst_path=str(dst),
                                           tracking_uri=self.store.uri))
        except (MlflowException, OSError) as err:
            raise TrackingError(f"run {self.run_id}: cannot read {path} of its model: "
                                f"{first_line(err)}") from err

    def end(self, status: Status, reason: str | None = None) -> None:
        """Terminate the run, recording ``reason`` as its failure."""
        with _uninterrupted():
            if reason:
                self.client.set_tag(self.run_id, names.FAILURE, reason[:5000])
            self.client.set_terminated(self.run_id, status)
