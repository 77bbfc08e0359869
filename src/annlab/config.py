"""The config schema (types, checked by OmegaConf) and its semantic checks.

Values live in ``conf/``; these dataclasses only say what each key may hold, so a wrong type or
an unknown key is refused while the config is composed. :func:`validate` then checks what types
cannot say (ranges, names, sums; the table in :mod:`annlab.rules`) before anything is tracked.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd
from omegaconf import MISSING, DictConfig, OmegaConf

from annlab import paths  # noqa: F401  (registers the resolver conf/paths uses)
from annlab.errors import AnnlabError
from annlab.rules import DATA_RULES, DATASETS, RULES, Dataset, hidden_sizes


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
    study: str = MISSING  # the study's name: the same name and storage resume and share it
    storage: str | None = None  # Optuna's database; null: optuna.db beside a sqlite store
    n_trials: int = MISSING  # the study's total, over every worker and rerun
    seed: int = MISSING  # the sampler's
    sampler: str = MISSING  # tpe | random
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    report_every: int = MISSING  # epochs between reports of the validation curve
    # section -> key -> {type: categorical, choices: [...]} or {type: int|float, low, high,
    # log}; checked by annlab.study.validate (a plain mapping, so `+` can add a key to search)
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


# Where a run is tracked, where files go and how a study drives it: no parameter, not part of
# the config hash.
NOT_PARAMETERS = ("tracking", "paths", "tune")
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "plot": PlotConfig,
            "tracking": TrackingConfig, "tune": TuneConfig}


class ConfigError(AnnlabError, ValueError):
    """A config value that is well typed but not allowed; the message names key and value."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"invalid config: {key}={value!r}; allowed: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def split_sizes(n_samples: int, train_fraction: float, val_fraction: float) -> tuple[int, ...]:
    """Train/validation/test sample counts; the test split takes the rounding remainder."""
    n_train, n_val = round(n_samples * train_fraction), round(n_samples * val_fraction)
    return n_train, n_val, n_samples - n_train - n_val


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _unknown_key(cfg: DictConfig) -> ConfigError | None:
    """A key the schema does not have (Hydra's ``+key=value`` adds one), if any."""
    places = [("", cfg, [f.name for f in fields(Config)])]
    places += [(f"{name}.", cfg[name], [f.name for f in fields(section)])
               for name, section in SECTIONS.items() if cfg.get(name) is not None]
    for prefix, node, known in places:
        for key in node:
            if key not in known:
                return ConfigError(f"{prefix}{key}", _plain(node[key]),
                                   f"the keys of {prefix.rstrip('.') or 'the config'}: "
                                   f"{', '.join(known)} (a misspelt key?)")
    return None


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value that cannot give a meaningful run."""
    if err := _unknown_key(cfg):
        raise err
    for rule in RULES:
        value = _plain(OmegaConf.select(cfg, rule.key))
        _require(rule.ok(value), rule.key, value, rule.allowed)
    d = cfg.data
    _validate_settings(d)
    fractions = [d.train_fraction, d.val_fraction, d.test_fraction]
    total = sum(fractions)
    _require(math.isclose(total, 1.0, abs_tol=1e-9), "data.*_fraction", fractions,
             f"fractions summing to 1 (these sum to {total:g})")
    shape = dataset_shape(d)
    sizes = split_sizes(shape["n_samples"], d.train_fraction, d.val_fraction)
    _require(min(sizes) >= 2 * shape["n_classes"], "data.n_samples", shape["n_samples"],
             f"enough samples for at least 2 per class in every split; these fractions give "
             f"{'/'.join(map(str, sizes))} train/val/test for {shape['n_classes']} classes")
    _require(bool(cfg.tracking.experiment), "tracking.experiment", cfg.tracking.experiment,
             "a non-empty experiment name")
    needed, budget = memory_needed(cfg), memory_budget()
    keys, largest = max(needed.items(), key=lambda item: item[1])
    _require(sum(needed.values()) <= budget, keys,
             " x ".join(str(_plain(OmegaConf.select(cfg, k))) for k in keys.split(" x ")),
             f"values whose arrays fit in memory: this config needs about "
             f"{_gib(sum(needed.values()))}, {_gib(largest)} of it for these keys, and the limit "
             f"is {_gib(budget)} (half of this machine's memory)")


def dataset(data: DictConfig) -> Dataset:
    return DATASETS[data.name]


def dataset_shape(data: DictConfig) -> dict[str, int]:
    """``n_samples``, ``n_features`` and ``n_classes`` of a (checked) data section."""
    return {key: dataset(data).size(data, key) for key in ("n_samples", "n_features",
                                                          "n_classes")}


def _validate_settings(d: DictConfig) -> None:
    """The settings ``data.name``'s dataset takes hold allowed values; the others are null."""
    chosen = dataset(d)
    for key, rule in DATA_RULES.items():
        value = d[key]
        if key in chosen.settings:
            _require(rule.ok(value), rule.key, value, rule.allowed)
        else:
            takes = ", ".join(f"data.{k}" for k in chosen.settings) or "no generator settings"
            _require(value is None, rule.key, value,
                     f"null: data.name={d.name} ({chosen.function}) takes {takes}")
    if d.name == "classification":
        used = d.n_informative + d.n_redundant
        _require(used <= d.n_features, "data.n_informative + data.n_redundant", used,
                 f"at most data.n_features={d.n_features}")
        # make_classification puts 2 clusters per class on the corners of a hypercube
        _require(2 * d.n_classes <= 2 ** d.n_informative, "data.n_informative",
                 d.n_informative, f"enough informative features for {d.n_classes} classes of "
                 f"2 clusters each: 2 * n_classes <= 2 ** n_informative")


def memory_needed(cfg: DictConfig) -> dict[str, int]:
    """Rough bytes of a run's largest arrays, by the keys that size them."""
    p, shape = cfg.plot, dataset_shape(cfg.data)
    widths = [shape["n_features"], *hidden_sizes(cfg.model.hidden_nodes), shape["n_classes"]]
    frames = min(p.frames, cfg.train.epochs)
    return {
        # activations, errors and gradients of every layer, a few copies each
        "data.n_samples x model.hidden_nodes": 8 * 6 * shape["n_samples"] * sum(widths),
        # per-epoch curves: Python floats, a DataFrame, MLflow's metric objects
        "train.epochs": 600 * cfg.train.epochs,
        # every frame's class probabilities on the grid
        "plot.frames x plot.grid_size": 8 * shape["n_classes"] * frames * p.grid_size ** 2,
        # every frame's pixels, RGB and palette copies
        "plot.frames x plot.dpi": 5 * frames * round(p.width * p.dpi) * round(p.height * p.dpi),
    }


def memory_budget() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def parameters(cfg: DictConfig) -> dict:
    """The resolved config without where it is tracked and where its files go (those are not
    resolved at all: their interpolations cost more than the rest of a grid's checks), and
    without the data settings its dataset does not take (null)."""
    found = {k: OmegaConf.to_container(v, resolve=True, throw_on_missing=True)
             if OmegaConf.is_config(v) else v
             for k, v in cfg.items() if k not in NOT_PARAMETERS}
    if isinstance(found.get("data"), dict):
        found["data"] = data_settings(found["data"])
    return found


def data_settings(data) -> dict[str, Any]:
    """A data section (a DictConfig or its dict) without the settings its dataset does not
    take (null)."""
    plain = OmegaConf.to_container(data) if OmegaConf.is_config(data) else data
    return {k: v for k, v in plain.items() if v is not None}


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """Dotted keys -> values (``model.activation``: ``tanh``), lists kept as their text."""
    flat = pd.json_normalize(parameters(cfg), sep=".").iloc[0].to_dict()
    return {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in flat.items()}


def config_hash(cfg: DictConfig) -> str:
    """Hash of everything that determines a run's results (where it is tracked does not)."""
    return hashlib.sha256(json.dumps(parameters(cfg), sort_keys=True).encode()).hexdigest()[:16]


# Keys a user varies besides activation, hidden nodes and learning rate, and their name parts.
NAME_PARTS = {"train.epochs": "e", "train.reg_lambda": "reg", "train.batch_size": "b",
              "data.n_samples": "n", "data.noise": "noise", "seed": "s"}


def run_name(cfg: DictConfig, baseline: DictConfig | None = None) -> str:
    """``<activation>-h<hidden>-lr<learning_rate>`` (``tanh-h10-lr0.1``), after the dataset
    unless it is moons (``circles-tanh-h10-lr0.5``), then a part for each key of
    :data:`NAME_PARTS` whose value differs from ``baseline`` (the default config), in that
    order: ``tanh-h10-lr0.1-e500-s3``. ``tracking.run_name``, when set, wins."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    hidden = "x".join(map(str, hidden_sizes(cfg.model.hidden_nodes)))
    name = f"{cfg.model.activation}-h{hidden}-lr{cfg.train.learning_rate:g}"
    if cfg.data.name != DataConfig.name:
        name = f"{cfg.data.name}-{name}"
    for key, part in NAME_PARTS.items():
        value = OmegaConf.select(cfg, key)
        if key.startswith("data.") and (baseline is None or value is None
                                        or cfg.data.name != baseline.data.name):
            continue  # another dataset's settings are its own, not a variation
        if baseline is not None and value != OmegaConf.select(baseline, key):
            name += f"-{part}{value:g}" if isinstance(value, float) else f"-{part}{value}"
    return name
