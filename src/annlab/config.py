"""The config schema: types, checked by OmegaConf while Hydra composes.

Values live in ``conf/``; these dataclasses only say what each key may hold, so a wrong type or
an unknown key is refused while the config is composed. :func:`annlab.spec.resolve` then checks
what types cannot say (ranges, names, sums; the table in :mod:`annlab.rules`) and resolves the
config into the run spec the library takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from annlab import paths  # noqa: F401  (registers the resolver conf/paths uses)
from annlab.errors import AnnlabError


@dataclass
class DataConfig:
    """One file per dataset in conf/data/; each sets the settings its dataset takes (see
    annlab.rules.DATASETS) and leaves the others null. The defaults are those of configs
    recorded before datasets were a choice: moons, not standardised."""

    name: str = "moons"
    n_samples: int | None = None  # a generator's
    noise: float | None = None  # moons, circles
    factor: float | None = None  # circles
    n_features: int | None = None  # blobs, classification
    n_classes: int | None = None  # blobs (its centres), classification
    cluster_std: float | None = None  # blobs
    n_informative: int | None = None  # classification
    n_redundant: int | None = None  # classification
    class_sep: float | None = None  # classification
    label_names: bool | None = None  # iris, wine, breast_cancer: scikit-learn's names as labels
    path: str | None = None  # file: one table (CSV or Parquet), split by annlab
    target: str | None = None  # file: the label column
    features: list[str] | None = None  # file: the feature columns (null: every other one)
    train: str | None = None  # file: three tables used as given (the post's sample files)
    validation: str | None = None
    test: str | None = None
    sha256: dict[str, str] | None = None  # file: each file's content digest, recorded by annlab
    standardize: bool = False  # StandardScaler fitted on the training split
    train_fraction: float = MISSING
    val_fraction: float = MISSING
    test_fraction: float = MISSING


@dataclass
class ModelConfig:
    activation: str = MISSING
    hidden_nodes: Any = MISSING  # an int, or a list of ints for several hidden layers


@dataclass
class TrainConfig:
    learning_rate: float = MISSING
    reg_lambda: float = MISSING
    epochs: int = MISSING
    batch_size: int | None = None


@dataclass
class PlotConfig:
    frames: int = MISSING  # frames of the boundary animation
    # Of those, logged as MLflow images by epoch (the UI's slider). 0 in configs recorded before
    # the key existed: they logged none.
    image_steps: int = 0
    grid_size: int = MISSING  # probability grid points per axis
    fps: float = MISSING
    width: float = MISSING  # figure size in inches
    height: float = MISSING
    dpi: int = MISSING


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else paths.store
    experiment: str = MISSING
    parent_run_id: str | None = None  # set for sweep jobs; never via MLFLOW_RUN_ID
    sweep: str | None = None  # the sweep's name, tagged on its children
    run_name: str | None = None  # null: derived from the config (annlab.config.run_name)


@dataclass
class PrunerConfig:
    name: str = MISSING  # median | successive_halving
    warmup_epochs: int = MISSING  # no trial is pruned before this epoch
    startup_trials: int = 5  # median: no pruning until this many trials have finished
    reduction_factor: int = 3  # successive halving keeps 1 in reduction_factor per rung


@dataclass
class TuneConfig:
    study: str | None = None  # null: the dataset's name; the same name and storage resume it
    storage: str | None = None  # Optuna's database; null: optuna.db beside a sqlite store
    n_trials: int = MISSING  # the study's total, over every worker and rerun
    seed: int = MISSING  # the sampler's
    sampler: str = MISSING  # tpe | random
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    report_every: int = MISSING  # epochs between reports of the validation curve
    # section -> key -> {type: categorical, choices: [...]} or {type: int|float, low, high,
    # log}; checked by annlab.spec (a plain mapping, so `+` can add a key to search)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    trial: int | None = None  # set for each trial's job by the study
    trial_id: int | None = None


@dataclass
class Config:
    seed: int = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: dict[str, str] = field(default_factory=dict)  # conf/paths: name -> path
    tune: TuneConfig | None = None  # `make tune` (tune=default) only


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "plot": PlotConfig,
            "tracking": TrackingConfig, "tune": TuneConfig}


class ConfigError(AnnlabError, ValueError):
    """A config value that is well typed but not allowed; the message names key and value."""

    def __init__(self, key: str, value: Any, allowed: str, message: str | None = None):
        super().__init__(message or f"invalid config: {key}={value!r}; allowed: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed
