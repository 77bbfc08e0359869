"""Experiments and runs: what annlab creates in a store, logs to it and reads back.

Runs are driven through ``MlflowClient`` with explicit run ids (no fluent global state), so a
process can hold several runs, a sweep's parent among them, without one leaking into another.
Every tag, status and artifact name comes from :mod:`annlab.names`.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

import annlab.tracking.liveness as liveness
from annlab import interrupts, names
from annlab.names import Status
from annlab.provenance import Provenance, git_state, user
from annlab.tracking.store import (
    Store,
    TrackingError,
    duplicate_row,
    first_line,
    once_more_if_raced,
    sqlite_path,
)

EXPERIMENT_TAGS = {names.EXPERIMENT_KIND: "custom_model_development"}
# The runs table as annlab opens it (views the UI saves as experiment tags, in the form MLflow
# 3.17's UI writes; make ui links to them by key): best validation misclassification first,
# each run's dataset, settings and scores as columns, and the chart view's image card of the
# decision boundaries showing them, not the runs' parameters.
SHOWN_COLUMNS = [f"tags.`{names.DATASET}`", "metrics.`val_misclassification`",
                 f"tags.`{names.BEST_RUN_NAME}`", "metrics.`val_accuracy`",
                 "metrics.`test_accuracy`", "params.`model.activation`",
                 "params.`model.hidden_nodes`", "params.`train.learning_rate`",
                 "params.`train.reg_lambda`", f"tags.`{names.PRUNED_AT}`", "attributes.`Models`"]

def _section(uuid: str, name: str) -> dict:
    return {"uuid": uuid, "name": name, "display": True, "isReordered": False, "deleted": False,
            "isGenerated": True}


def _card(kind: str, section: str, key: str, **fields) -> dict:
    """A chart card as MLflow 3.17's UI saves one (its defaults, and ``fields``)."""
    card = {"uuid": f"annlab-{key}", "type": kind, "runsCountToCompare": 10,
            "metricSectionId": section, "deleted": False, "isGenerated": True}
    if kind == "LINE":
        card |= {"metricKey": key, "selectedMetricKeys": [key], "lineSmoothness": 0,
                 "xAxisScaleType": "linear", "scaleType": "linear", "xAxisKey": "step",
                 "selectedXAxisMetricKey": "", "yAxisKey": "metric", "yAxisExpressions": [],
                 "ignoreOutliers": False, "useGlobalXaxisKey": True,
                 "useGlobalLineSmoothing": True}
    elif kind == "BAR":
        card |= {"metricKey": key, "selectedMetricKeys": [key]}
    return card | fields


# The chart view: the curves, the decision boundaries at each logged epoch (images, not the runs'
# parameters over them), the final scores. A view that names its charts gets no others.
_CHARTS = {
    "compareRunSections": [_section("annlab-curves", "Curves"),
                           _section("annlab-boundaries", "Decision boundaries"),
                           _section("annlab-scores", "Final scores")],
    "compareRunCharts": [
        *(_card("LINE", "annlab-curves", key) for key in (
            "val_misclassification", "train_misclassification", "val_loss", "train_loss")),
        _card("IMAGE", "annlab-boundaries", names.BOUNDARY_IMAGE_KEY,
              imageKeys=[names.BOUNDARY_IMAGE_KEY], step=0, showRunParams=False),
        *(_card("BAR", "annlab-scores", key) for key in ("test_accuracy", "val_accuracy"))]}

BEST_VIEW_STATE = {"orderByKey": "metrics.`val_misclassification`", "orderByAsc": True,
                   "selectedColumns": SHOWN_COLUMNS, "columnOrder": SHOWN_COLUMNS[:3],
                   "columnWidths": {SHOWN_COLUMNS[2]: 240},
                   **_CHARTS}
VIEWS = {
    # make ui's: single runs and sweep and study parents (a parent's val_misclassification is
    # its best child's, named in a column), not their children nor reproduce verdicts
    "annlab-runs": ("annlab: runs and sweeps", {
        **BEST_VIEW_STATE, "searchFilter": f"tags.`{names.PARENT_RUN}` IS NULL and "
                                           f"tags.`{names.REPRODUCES}` IS NULL"}),
    # every trained run, children too, flat
    "annlab-best": ("annlab: best first", {
        **BEST_VIEW_STATE, "searchFilter": f"tags.`{names.CONFIG_HASH}` IS NOT NULL"}),
}
# What the logged model loads with (annlab.model_io and the estimator), pinned to the versions
# this run used. annlab's code is not shipped with the model: loaded in a process that has
# annlab, MLflow would put the model's copy first on sys.path, in its place.
MODEL_PACKAGES = ("annlab", "numpy", "scipy", "scikit-learn")


@dataclass(frozen=True)
class ModelMetric:
    """A final metric linked to a run's model: measured on ``split`` (a dataset context), at
    ``step`` (a per-epoch curve's last point is sent once, linked)."""

    key: str
    value: float
    split: str | None = None
    step: int = 0


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
    dataset_name: str | None = None  # its datasets' name (the generator: make_moons)
    end_time: int | None = None  # ms, once it has ended

    @classmethod
    def of(cls, run) -> Record:
        inputs = run.inputs.dataset_inputs if run.inputs else []
        datasets = {t.value: d.dataset.digest for d in inputs for t in d.tags
                    if t.key == names.DATASET_CONTEXT}
        outputs = run.outputs.model_outputs if run.outputs else []
        return cls(run.info.run_id, run.info.run_name, Status(run.info.status),
                   run.info.experiment_id, run.info.start_time, dict(run.data.params),
                   dict(run.data.metrics), dict(run.data.tags), datasets,
                   tuple(o.model_id for o in outputs),
                   next((d.dataset.name for d in inputs), None), run.info.end_time)

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

    @property
    def kind(self) -> str:
        """What made the run: ``run`` (a trained config, a sweep's child or a trial too),
        ``sweep`` or ``study`` (a parent), ``verdict`` (`make reproduce`'s), or ``other`` (not
        annlab)."""
        if names.REPRODUCES in self.tags:
            return "verdict"
        if self.parent_run_id is None and names.SWEEP in self.tags:
            return "sweep"
        if self.parent_run_id is None and names.STUDY in self.tags:
            return "study"
        return "run" if self.config_hash is not None else "other"


class Experiment:
    """One experiment of a store: where runs, sweeps and their children are created and found."""

    def __init__(self, store: Store, experiment_id: str, name: str):
        self.store, self.id, self.name = store, experiment_id, name

    @property
    def uri(self) -> str:
        return self.store.uri

    @classmethod
    def open(cls, store: Store, name: str, job: bool = False) -> Experiment:
        """The experiment, created (with its tags) if new; runs its dead processes left
        RUNNING are closed as KILLED first (not by a sweep's ``job``: its launching process
        did, and the view was saved then too).

        Call this in the launching process before any job starts: racing experiment creation
        can file runs under "Default".
        """
        db = sqlite_path(store.uri)
        artifact_location = (db.parent / "mlartifacts").as_uri() if db is not None else None
        client = store.client
        try:
            found = client.get_experiment_by_name(name)
            if found is None:
                try:
                    experiment_id = client.create_experiment(name, artifact_location,
                                                             EXPERIMENT_TAGS)
                except MlflowException:  # created meanwhile by someone else: use theirs
                    if (found := client.get_experiment_by_name(name)) is None:
                        raise
                else:
                    experiment = cls(store, experiment_id, name)
                    experiment.save_views()
                    return experiment
            if found.lifecycle_stage == "deleted":
                raise TrackingError(f"experiment {name!r} is deleted in {store.uri}; restore "
                                    "it (mlflow experiments restore) or choose another name")
            experiment = cls(store, found.experiment_id, name)
            for key, value in EXPERIMENT_TAGS.items():
                if found.tags.get(key) != value:
                    experiment.set_tag(key, value)
            if not job:
                experiment.save_views(found.tags)
                experiment.close_dead_runs()
            return experiment
        except (MlflowException, SQLAlchemyError) as err:
            store.check_reachable(f"experiment {name!r} cannot be opened", cause=err)
            raise TrackingError(f"tracking store {store.uri}: {first_line(err)}") from err

    @classmethod
    def by_id(cls, store: Store, experiment_id: str) -> Experiment:
        try:
            return cls(store, experiment_id, store.client.get_experiment(experiment_id).name)
        except MlflowException as err:
            raise TrackingError(f"no experiment with id {experiment_id!r} in {store.uri}"
                                ) from err

    @classmethod
    def of_parent(cls, store: Store, name: str, parent_run_id: str) -> Experiment | None:
        """A sweep's or study's job's experiment, read from its parent run (its launching
        process opened both): one request, which also says whether the parent still runs.
        None once it has ended: a sweep stopped (Ctrl-C) closes its parent, and a job its
        launcher had queued must not start after that."""
        try:
            info = store.client.get_run(parent_run_id).info
        except (MlflowException, SQLAlchemyError) as err:
            store.check_reachable(f"experiment {name!r} cannot be opened", cause=err)
            raise TrackingError(f"tracking store {store.uri}: {first_line(err)}") from err
        return cls(store, info.experiment_id, name) if info.status == Status.RUNNING else None

    def check_parent(self, run_id: str) -> None:
        """``tracking.parent_run_id`` given by hand names a run of this experiment."""
        from annlab.config import ConfigError

        try:
            found = self.store.client.get_run(run_id).info.experiment_id
        except MlflowException:
            found = None
        if found != self.id:
            raise ConfigError("tracking.parent_run_id", run_id, f"the id of a run in experiment "
                              f"{self.name!r} of {self.uri}" + (
                                  "" if found is None else f"; this one is in experiment {found}"))

    def save_views(self, tags: Mapping | None = None) -> None:
        """annlab's views of the runs table (:data:`VIEWS`), unless ``tags`` hold them."""
        for key, (title, state) in VIEWS.items():
            self.save_view(key, title, state, tags)

    def save_view(self, key: str, title: str, state: Mapping, tags: Mapping | None = None
                  ) -> None:
        """A saved view of the runs table (the UI's Views menu; ``viewStateShareKey=<key>`` in
        its URL), written unless ``tags`` (the experiment's) already hold the same."""
        tag = f"{names.SHARED_VIEW}{key}"
        with suppress(KeyError, ValueError, TypeError):  # none yet, or not one of these
            if json.loads(json.loads((tags or {})[tag])["state"]) == state:
                return
        now = int(time.time() * 1000)
        self.set_tag(tag, json.dumps(
            {"name": title, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}))

    def set_tag(self, key: str, value: str) -> None:
        """Set an experiment tag, also when another process sets it at the same moment (two
        launches opening a new experiment)."""
        once_more_if_raced(lambda: self.store.client.set_experiment_tag(self.id, key, value))

    @contextmanager
    def start_run(self, run_name: str, provenance: Provenance | None = None, *,
                  parent_run_id: str | None = None, sweep: str | None = None,
                  tags: Mapping[str, object] | None = None) -> Iterator[Run]:
        """A run that always ends in a terminal state.

        FINISHED on success; FAILED with the reason in ``annlab.failure`` on an error; KILLED on
        a signal (:mod:`annlab.interrupts`). The exception is re-raised for the caller to
        report.
        """
        all_tags = dict(tags or {})
        if provenance is not None:
            all_tags |= {names.CONFIG_HASH: provenance.config_hash,
                         names.SOURCE_NAME: provenance.entry_point,
                         names.SOURCE_TYPE: "LOCAL", names.USER: provenance.user,
                         names.GIT_COMMIT: provenance.git.commit,
                         names.GIT_DIRTY: provenance.git.dirty,
                         names.LOCK_HASH: provenance.lock_hash,
                         names.PLATFORM: provenance.platform["fingerprint"],
                         names.ENVIRONMENT: json.dumps(provenance.environment(),
                                                       sort_keys=True, default=str)}
        all_tags |= {names.PARENT_RUN: parent_run_id, names.SWEEP: sweep,
                     **liveness.writer_tags()}
        with interrupts.raised() as received:
            try:
                info = self.store.client.create_run(self.id, run_name=run_name, tags={
                    k: str(v) for k, v in all_tags.items() if v is not None}).info
            except MlflowException as err:
                raise TrackingError(f"cannot create a run in {self.uri}: {err.message}"
                                    ) from err
            run = Run(self.store, info.run_id)
            with run.heartbeat():
                try:
                    if provenance is not None and provenance.git.diff:
                        run.log_text(provenance.git.diff, names.GIT_DIFF_FILE)
                    yield run
                except BaseException as err:
                    self.store.check_reachable(f"run {run_name} ({run.run_id}) stays RUNNING "
                                               "until annlab next opens the store", cause=err)
                    # An interrupt that surfaced as another exception (a library wrapped it)
                    # still KILLs the run.
                    if isinstance(err, KeyboardInterrupt) or received:
                        reason = (received[0] if received else
                                  getattr(err, "reason", interrupts.CTRL_C))
                        run.end(Status.KILLED, reason)
                        raise interrupts.Interrupted(
                            reason, f"{reason}: run {run_name} ({run.run_id}) closed as KILLED"
                        ) from err
                    run.end(Status.FAILED, str(err) or type(err).__name__)
                    raise
                else:
                    run.end(Status.FINISHED)

    def search(self, filter_string: str) -> list[Record]:
        runs = self.store.client.search_runs([self.id], filter_string, max_results=50_000)
        return [Record.of(r) for r in runs]

    def close_dead_runs(self) -> list[Record]:
        """Close as KILLED every RUNNING run whose process is gone: killed with SIGKILL,
        crashed, or on a machine that has been silent too long (:mod:`.liveness`)."""
        now, dead = time.time(), []
        for record in self.search(f"attributes.status = '{Status.RUNNING}'"):
            if (reason := liveness.abandoned(record.tags, now)) is not None:
                Run(self.store, record.run_id).end(Status.KILLED, reason)
                dead.append(record)
        if dead:
            print(f"note: closed {len(dead)} run(s) left RUNNING by a process that is gone, as "
                  "KILLED: " + ", ".join(f"{r.run_name} ({r.run_id})" for r in dead),
                  file=sys.stderr)
        return dead

    def parent_run(self, key: Mapping[str, str], run_name: str, entry_point: str,
                   tags: Mapping[str, str] | None = None, exclusive: bool = False
                   ) -> tuple[Run, bool]:
        """A sweep's or a study's parent run: the latest top-level run whose tags match
        ``key`` (resumed: set RUNNING again, its failure cleared), else a new one with ``key``
        and ``tags``, its source ``entry_point``. Returns (run, resumed).

        ``exclusive`` (a sweep: its configs are not shared out between launches): refused with
        :class:`AlreadyRunning` while another live process writes such a parent, also when two
        launches open it at the same moment (see :meth:`_claim`)."""
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in key.items())
        found = [r for r in self.search(query) if r.parent_run_id is None]
        client = self.store.client
        if found:
            latest = max(found, key=lambda r: r.start_time)
            if exclusive:
                self._refuse_if_owned(latest)
            parent = Run(self.store, latest.run_id)
            parent.resume()
        else:
            source = {names.SOURCE_NAME: entry_point, names.SOURCE_TYPE: "LOCAL",
                      names.USER: user(), names.GIT_COMMIT: git_state().commit}
            all_tags = {**key, **(tags or {}), **source, **liveness.writer_tags()}
            parent = Run(self.store, client.create_run(self.id, run_name=run_name, tags={
                k: str(v) for k, v in all_tags.items() if v is not None}).info.run_id)
        if exclusive:
            self._claim(parent, bool(found), query)
        return parent, bool(found)

    @staticmethod
    def _refuse_if_owned(record: Record) -> None:
        """Refuse a parent that another live process writes."""
        me = str(liveness.ProcessId.current())
        if (record.status == Status.RUNNING and record.tags.get(names.PROCESS) != me
                and liveness.abandoned(record.tags, time.time()) is None):
            raise AlreadyRunning(record)

    def _claim(self, parent: Run, resumed: bool, query: str) -> None:
        """Two launches that opened the same parent at once (both resumed it) or two parents
        for one grid (both found none): the parent that started first and, on it, the last
        process that resumed it go on; the other launch refuses, deleting the parent it made.
        A resumed parent is looked at again after CLAIM_SECONDS, so that a launch that found
        it a moment after this one did has written its claim by then."""
        if resumed:
            time.sleep(CLAIM_SECONDS)
        now = time.time()
        live = [r for r in self.search(query) if r.parent_run_id is None
                and r.status == Status.RUNNING and liveness.abandoned(r.tags, now) is None]
        owner = min(live, key=lambda r: (r.start_time, r.run_id), default=None)
        if owner is not None and owner.tags.get(names.PROCESS) != str(
                liveness.ProcessId.current()):
            if not resumed:
                self.store.client.delete_run(parent.run_id)
            raise AlreadyRunning(owner)

    def children(self, parent_run_id: str) -> list[Record]:
        return self.search(f"tags.`{names.PARENT_RUN}` = '{parent_run_id}'")

    def close_stale_children(self, parent_run_id: str, reason: str) -> list[Record]:
        """End as KILLED every child still RUNNING that this process's jobs wrote (their
        workers are being stopped with it) or whose writer is gone; a child another live
        process writes (a study's other worker) is left to it."""
        now = time.time()
        stale = [r for r in self.children(parent_run_id) if r.status == Status.RUNNING and (
            liveness.written_here(r.tags) or liveness.abandoned(r.tags, now) is not None)]
        for record in stale:
            Run(self.store, record.run_id).end(Status.KILLED, reason)
        return stale


CLAIM_SECONDS = 0.5  # how long a resumed sweep waits before it looks for a launch beside it


class AlreadyRunning(TrackingError):
    """A sweep another live process is running: launched twice."""

    def __init__(self, owner: Record):
        writer = liveness.ProcessId.parse(owner.tags.get(names.PROCESS, ""))
        who = f"process {writer.pid} on {writer.host}" if writer else "another process"
        super().__init__(f"this sweep is running already: its parent {owner.run_name} "
                         f"({owner.run_id}) is written by {who}; nothing was started here. "
                         "Wait for it to end, or stop it, then rerun to run what is left")


FLUSH_SECONDS = 5.0  # how often a training run's new curve points are sent
# MLflow infers a table's schema value by value (30 s for 600,000 rows of 20 columns); annlab's
# tables have one dtype a column and no missing values, so their first rows give the same one.
SCHEMA_ROWS = 1000


class Curves:
    """A run's per-epoch curves, sent while it trains: each epoch's values are kept, and once
    FLUSH_SECONDS have passed the epochs not sent yet go out in one batch (with the params and
    tags still pending), so that the UI's charts grow live and a run killed midway keeps what
    it trained. A run shorter than that sends everything in its last batch (:meth:`flush`),
    with its final metrics linked to its model: no request more than logging it all at the
    end."""

    def __init__(self, run: Run, keys: list[str], params: Mapping[str, object],
                 tags: Mapping[str, object]):
        # The objective first: the UI's Compare page plots the first metric logged by default.
        self.run, self.keys = run, sorted(keys, key=lambda k: k != "val_misclassification")
        self.params, self.tags = dict(params), dict(tags)
        self.points: list[tuple[int, dict[str, float]]] = []
        self.sent = time.monotonic()

    def add(self, epoch: int, values: Mapping[str, float]) -> None:
        self.points.append((epoch, dict(values)))
        if time.monotonic() - self.sent >= FLUSH_SECONDS:
            self.sent = time.monotonic()
            with suppress(MlflowException, OSError):  # kept for the next batch
                self.flush()

    def watch(self, model) -> None:
        """As a training callback: the epoch the model just trained."""
        self.add(model.n_iter_, {key: model.history_[key][-1] for key in self.keys})

    def flush(self, tags: Mapping[str, object] | None = None, model_id: str | None = None,
              linked: list[ModelMetric] = (), dataset: str | None = None,
              digests: Mapping[str, str] | None = None) -> None:
        """Everything pending in one batch: the points not sent yet, ``tags``, and the final
        metrics ``linked`` to the model ``model_id`` and to the dataset of the split each was
        measured on (``dataset``'s inputs, a context of ``digests``). A linked curve point
        replaces its plain one."""
        now = int(time.time() * 1000)
        taken = {(m.key, m.step) for m in linked}
        metrics = [Metric(key, float(values[key]), now, epoch) for epoch, values in self.points
                   for key in self.keys if key in values and (key, epoch) not in taken]
        metrics += [Metric(m.key, float(m.value), now, m.step, model_id=model_id,
                           dataset_name=dataset if m.split else None,
                           dataset_digest=digests[m.split] if m.split else None)
                    for m in linked]
        self.run.log_batch(self.params, {**self.tags, **(tags or {})}, metrics)
        self.params, self.tags, self.points = {}, {}, []


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

    def settled(self) -> Record:
        """The run's record, once a run its process left RUNNING (killed, crashed, a machine
        silent too long) is closed as KILLED, as opening the store closes such runs."""
        record = self.record()
        if record.status == Status.RUNNING and (
                reason := liveness.abandoned(record.tags, time.time())) is not None:
            self.end(Status.KILLED, reason)
            print(f"note: closed run {record.run_name} ({self.run_id}), left RUNNING by a "
                  f"process that is gone, as KILLED", file=sys.stderr)
            record = self.record()
        return record

    def log_batch(self, params: Mapping[str, object] | None = None,
                  tags: Mapping[str, object] | None = None,
                  metrics: list[Metric] | None = None) -> None:
        """Params, tags and metrics in as few requests as MLflow's limits allow (it chunks)."""
        self.client.log_batch(
            self.run_id, metrics=metrics or [],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items() if v is not None])

    def log_params(self, params: Mapping[str, object]) -> None:
        self.log_batch(params=params)

    def set_tags(self, tags: Mapping[str, object]) -> None:
        self.log_batch(tags=tags)

    def log_metrics(self, values: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        self.log_batch(metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])

    def curves(self, keys: list[str], params: Mapping[str, object] | None = None,
               tags: Mapping[str, object] | None = None) -> Curves:
        """A per-epoch record of ``keys`` sent while the run trains (:class:`Curves`);
        ``params`` and ``tags`` go with its first batch."""
        return Curves(self, keys, params or {}, tags or {})

    def log_history(self, history: pd.DataFrame) -> None:
        """Every column as a per-step metric (step = the frame's index), in batched requests."""
        curves = self.curves(list(history.columns))
        for epoch, row in history.iterrows():
            curves.add(int(epoch), row.to_dict())
        curves.flush()

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def rename(self, run_name: str) -> None:
        self.set_tags({names.RUN_NAME: run_name})

    def set_note(self, markdown: str) -> None:
        """The run's description, shown on its page in the UI."""
        self.set_tags({names.NOTE: markdown})

    def log_datasets(self, name: str, splits: Mapping[str, pd.DataFrame],
                     digests: Mapping[str, str], sources: Mapping[str, object],
                     target: str) -> None:
        """Each split (a table of its features and ``target``) as an MLflow dataset input, its
        context the split's name (the UI's Dataset column and filter), its schema the table's
        columns. Its source: the file it was read from (a path), or how to make the data
        again (a mapping: the generator, its settings and seed)."""
        from mlflow.data import from_pandas
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for context, frame in splits.items():
            source = sources[context]
            with warnings.catch_warnings():  # MLflow's hints about what annlab chose to log:
                # a path is a local file (it finds two readers), integer labels have no gaps
                warnings.filterwarnings("ignore", "The specified dataset source can be "
                                        "interpreted in multiple ways")
                warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer")
                kw = {"source": str(source) if isinstance(source, Path)
                      else CodeDatasetSource(dict(source)), "targets": target, "name": name,
                      "digest": digests[context]}
                data = from_pandas(frame.head(SCHEMA_ROWS), **kw).to_dict() | {
                    "profile": json.dumps(from_pandas(frame, **kw).profile)}  # all its rows
            inputs.append(DatasetInput(Dataset(**data), [InputTag(names.DATASET_CONTEXT,
                                                                  context)]))
        # Two runs logging the same data at once (a sweep's first jobs) both miss the dataset
        # and the later insert is rolled back; the dataset exists then, and the call links it.
        once_more_if_raced(lambda: self.client.log_inputs(self.run_id, datasets=inputs))

    def create_model(self, experiment_id: str, weights: Path, features: pd.DataFrame,
                     predictions, params: Mapping[str, object], run_name: str) -> str:
        """The run's MLflow 3 logged model (the UI's Models tab; ``runs:/<id>/model``), its
        files uploaded; :meth:`Curves.flush` links the final metrics to it and
        :meth:`publish_model` makes it the run's, READY. A pyfunc model of three files: its
        ``MLmodel``, its ``requirements.txt`` (annlab and its libraries, pinned to the
        versions this run used) and the ``.npz`` weights (nothing pickled), loaded by annlab's
        own code. Its signature, inferred from the first :data:`SCHEMA_ROWS` training rows
        (``features``) and their ``predictions``, names the input columns (MLflow's scoring
        server checks requests against it) and takes a ``predict_method`` param; a few rows of
        ``features`` go in its metadata as the example `make serve` prints. Returns its model id."""
        import mlflow.pyfunc
        from mlflow.models import Model, infer_signature

        model = self.client.create_logged_model(
            experiment_id, names.MODEL_NAME, source_run_id=self.run_id,
            params={k: str(v) for k, v in params.items()},
            model_type="annlab.NeuralNetClassifier", tags={names.MODEL_RUN_NAME: run_name})
        example = {"dataframe_split": json.loads(features.head(3).to_json(orient="split",
                                                                          index=False))}
        mlmodel = Model(artifact_path=model.artifact_location, model_uuid=model.model_id,
                        run_id=self.run_id, model_id=model.model_id,
                        signature=infer_signature(features, predictions,
                                                  params={"predict_method": "predict"}),
                        metadata={names.SERVING_EXAMPLE: example})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / names.MODEL_NAME
            (path / "data").mkdir(parents=True)
            shutil.copyfile(weights, path / names.WEIGHTS_FILE)
            mlflow.pyfunc.add_to_model(mlmodel, loader_module="annlab.model_io",
                                       data=names.WEIGHTS_FILE)
            mlmodel.save(path / "MLmodel")
            (path / "requirements.txt").write_text(
                "".join(f"{p}=={version(p)}\n" for p in MODEL_PACKAGES))
            self.client.log_model_artifacts(model.model_id, str(path))
        return model.model_id

    def publish_model(self, model_id: str) -> None:
        """The run's logged model, READY."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        self.client.log_outputs(self.run_id, [LoggedModelOutput(model_id, step=0)])
        self.client.finalize_logged_model(model_id, LoggedModelStatus.READY)

    def log_images(self, key: str, images: Mapping[int, Path]) -> dict[str, str]:
        """Images by step (MLflow's image charts: one slider over the steps of many runs),
        uploaded together as MLflow's ``log_image`` names them: each PNG as it is and a
        thumbnail MLflow's UI shows (tests/unit/test_tracking.py pins the names). Returns the
        tag that tells the UI the run has images, for the caller's next batch."""
        from mlflow.tracking.multimedia import compress_image_size
        from PIL import Image

        if not images:
            return {}
        now = int(time.time() * 1000)
        with tempfile.TemporaryDirectory() as tmp:
            for step, path in images.items():
                name = Path(tmp) / f"{key}+step+{step}+timestamp+{now}+{uuid.uuid4()}"
                shutil.copyfile(path, f"{name}.png")
                with Image.open(path) as image:
                    compress_image_size(image.convert("RGB")).save(f"{name}+compressed.webp")
            self.client.log_artifacts(self.run_id, tmp, "images")
        return {names.LOGGED_IMAGES: "True"}

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

    def heartbeat(self):
        """While inside, the run's heartbeat tag is renewed (:func:`.liveness.heartbeat`)."""
        return liveness.heartbeat(lambda now: self.client.set_tag(self.run_id, names.HEARTBEAT,
                                                                  now))

    def resume(self) -> None:
        """RUNNING again, written by this process (a resumed sweep or study)."""
        record = self.record()
        self.client.update_run(self.run_id, status=Status.RUNNING)
        if record.failure is not None:
            self.client.delete_tag(self.run_id, names.FAILURE)
        self.set_tags(liveness.writer_tags())

    def share(self) -> None:
        """Leave the run RUNNING for other processes to finish (a study's other workers): it
        no longer names this process, so only a silent heartbeat can close it."""
        self.set_tags({names.PROCESS: liveness.SHARED})

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
        """Terminate the run, recording ``reason`` as its failure. Idempotent: two processes
        may close the same abandoned run at once (MLflow sets a tag by looking it up, then
        inserting it, so the later insert breaks its uniqueness), and the one that lost does
        it again, over the tag that is there now."""
        with interrupts.held():
            for attempt in (1, 2):
                try:
                    if reason:
                        self.client.set_tag(self.run_id, names.FAILURE, reason[:5000])
                    self.client.set_terminated(self.run_id, status)
                    return
                except MlflowException as err:
                    if attempt == 2 or not duplicate_row(err):
                        raise
