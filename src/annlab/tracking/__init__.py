"""The one part of annlab that talks to MLflow, behind one facade.

``tracking.open(uri, experiment)`` gives an :class:`Experiment` (store, client and id together);
runs, sweeps and their children are asked of it. Inside: :mod:`.store` opens a store (its URI
checked, a new sqlite file created whole, a server asked whether it answers), :mod:`.runs`
creates, logs to and reads experiments and runs, :mod:`.liveness` tells whether the process
writing a run still lives, :mod:`.registry` registers a run's model and keeps the champion.
"""

from __future__ import annotations

import logging
import os

from annlab.tracking.registry import (
    Registered,
    model_uri,
    register,
    register_given,
    serving_example,
)
from annlab.tracking.runs import (
    BEST_VIEW_STATE,
    SCHEMA_ROWS,
    Curves,
    Experiment,
    ModelMetric,
    Record,
    Run,
)
from annlab.tracking.store import (
    Store,
    TrackingError,
    file_lock,
    first_line,
    is_server,
    resolve_uri,
    sqlite_path,
)

# Quiet by default: MLflow's INFO lines (schema creation, signature checks) are not for users.
# (Set after MLflow is imported: importing it configures its loggers.)
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("urllib3").setLevel(logging.ERROR)  # MLflow's retries say the rest
# A tracking server that goes away: MLflow's own retries absorb an outage of up to ~30 s (a
# restart) and then fail with the server's address, instead of its default minutes. Quiet: no
# progress bars, no "View run at" lines. Read by MLflow at each call; settings the user
# exported win.
for _name, _value in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
                      "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                      "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                      "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                      "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}.items():
    os.environ.setdefault(_name, _value)

__all__ = ["BEST_VIEW_STATE", "Curves", "Experiment", "ModelMetric", "Record", "Registered", "Run",
           "SCHEMA_ROWS", "Store", "TrackingError", "connect", "file_lock", "first_line",
           "is_server", "model_uri", "open", "open_job", "register", "register_given",
           "resolve_uri", "serving_example", "sqlite_path"]


def connect(uri: str) -> Store:
    """The store at ``uri``, created if it is a new sqlite file; refused in one line if not a
    usable store."""
    return Store(uri)


def open(uri: str, experiment: str, job: bool = False) -> Experiment:
    """The experiment ``experiment`` of the store at ``uri``, created if new. For a sweep's
    ``job`` its launching process has opened both already: it is only looked up."""
    return Experiment.open(Store(uri, job), experiment, job)


def open_job(uri: str, experiment: str, parent_run_id: str) -> Experiment | None:
    """A sweep's or study's job's experiment, from its parent run; None if the parent has
    ended (see :meth:`Experiment.of_parent`)."""
    return Experiment.of_parent(Store(uri, True), experiment, parent_run_id)
