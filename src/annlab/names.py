"""Every name annlab writes to or reads from MLflow, spelled once.

Owned by :mod:`annlab.tracking`: other modules neither spell an ``mlflow.*`` or ``annlab.*`` tag
nor a run status; they use these constants or the typed records tracking returns.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """MLflow's run states."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


# MLflow's own tags
PARENT_RUN = "mlflow.parentRunId"
GIT_COMMIT = "mlflow.source.git.commit"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
USER = "mlflow.user"
NOTE = "mlflow.note.content"  # the run's description (markdown)
DATASET_CONTEXT = "mlflow.data.context"
EXPERIMENT_KIND = "mlflow.experimentKind"
RUN_NAME = "mlflow.runName"  # set in a batch: a run renamed without a request of its own
LOGGED_IMAGES = "mlflow.loggedImages"  # the UI's image charts read a run's images when set
SHARED_VIEW = "mlflow.sharedViewState."  # an experiment tag: a saved view of the runs table
MODEL_VERSIONS = "mlflow.modelVersions"  # a logged model's tag: its registered versions (JSON)

# annlab's run tags
CONFIG_HASH = "annlab.config_hash"
DATASET = "annlab.dataset"  # a run's dataset (a parent's: its grid's), as it is named
DATA_HASH = "annlab.data_hash"
GIT_DIRTY = "annlab.git_dirty"
LOCK_HASH = "annlab.lock_hash"
PLATFORM = "annlab.platform"
ENVIRONMENT = "annlab.environment"  # JSON: git state, lock file, package versions, platform
FAILURE = "annlab.failure"
PROCESS = "annlab.process"  # host, boot id, pid and start of the process writing the run
HEARTBEAT = "annlab.heartbeat"  # unix time, renewed while that process lives
SWEEP = "annlab.sweep"
SWEEP_GRID = "annlab.sweep_grid"
SWEEP_SIZE = "annlab.sweep_size"
BEST_RUN = "annlab.best_run"
BEST_RUN_NAME = "annlab.best_run_name"
STUDY = "annlab.study"  # a tuning study's parent run: the study's name
STUDY_STORAGE = "annlab.study_storage"  # where the Optuna study lives
STUDY_KEY = "annlab.study_key"  # which study of that name and storage (one made anew)
TRIAL = "annlab.trial"  # a trial's child run: the trial's number
PRUNED_AT = "annlab.pruned_at"  # a pruned trial: the last epoch it trained (it ends FINISHED)
REPRODUCES = "annlab.reproduces"
VERDICT = "annlab.verdict"

# Artifacts
CONFIG_FILE = "config/config.yaml"
OVERRIDES_FILE = "config/overrides.yaml"
ENVIRONMENT_FILE = "environment/environment.json"  # runs recorded before annlab.environment
GIT_DIFF_FILE = "environment/git.diff"
FIGURES_DIR = "figures"
MODEL_DIR = "model"
WEIGHTS_FILE = "data/weights.npz"  # inside the logged pyfunc model
SWEEP_SUMMARY_FILE = "sweep_summary.csv"
TRIALS_FILE = "trials.csv"
REPORT_FILE = "reproduce/report.txt"
# Each run's figures, by what they show: Figure 3 of the post, Figure 2 and its last frame
# (for data of more than two features, in the plane of their first two principal components),
# and for such data the test split's confusion matrix.
FIGURE_FILES = {"misclassification": "misclassification.png", "boundary": "boundary.gif",
                "boundary_final": "boundary_final.png", "confusion": "confusion_matrix.png"}
SWEEP_FIGURE_FILES = {"heatmaps": "val_misclassification_heatmaps.png",
                      "curves": "val_curves.png", "boundaries": "boundaries.png"}

# Logged model and images
MODEL_NAME = "model"  # the run's MLflow 3 logged model: runs:/<run id>/model
MODEL_RUN_NAME = "annlab.run_name"  # the logged model's tag: the run it comes from
SERVING_EXAMPLE = "annlab.serving_example"  # in its MLmodel's metadata: rows it answers
VERSION_SCORE = "annlab.val_misclassification"  # a model version's tag: what ranks it
BOUNDARY_IMAGE_KEY = "boundary"  # per-epoch decision boundaries, step = epoch

# Metrics logged once (per-epoch curves are named by annlab.network.HISTORY_KEYS); a sweep's or
# a study's parent logs its best child's final val_misclassification under the same name, so
# that one sort ranks single runs and sweeps
BEST_VAL_MISCLASSIFICATION = "val_misclassification"
REPRODUCE_DIFFERENCES = "reproduce_differences"
