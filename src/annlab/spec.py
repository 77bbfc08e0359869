"""A composed config, checked once and resolved into one frozen, typed run spec.

:func:`resolve` is the one way from Hydra's DictConfig to what the library takes: it refuses the
first value that cannot give a meaningful run (a :class:`ConfigError` naming the key, the value and
what is allowed; the table of rules is :mod:`annlab.rules`) and derives, once, everything the
stages and the tracking need: hidden layer sizes, the dataset and its shape, the data settings,
the params, the config hash and the run's name. Below the entry points and the sweepers, nothing
reads the DictConfig again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from annlab.config import SECTIONS, Config, ConfigError
from annlab.paths import tracking_uri
from annlab.rules import (
    DATA_RULES,
    DATASETS,
    FILE,
    FILE_SETTINGS,
    MAX_CLASSES,
    RULES,
    SPACE_RULES,
    TUNE_RULES,
    Dataset,
    hidden_sizes,
    space_ends,
)

# Where a run is tracked, where files go and how a study drives it: no parameter, not part of
# the config hash.
NOT_PARAMETERS = ("tracking", "paths", "tune")
FILE_KEYS = ("data.path", "data.train", "data.validation", "data.test")  # keys naming a file
DEFAULT_DATASET = "moons"  # runs of another dataset are named after it
# Keys a user varies besides activation, hidden nodes and learning rate, and their name parts.
NAME_PARTS = {"train.epochs": "e", "train.reg_lambda": "reg", "train.batch_size": "b",
              "data.n_samples": "n", "data.noise": "noise", "seed": "s"}


@dataclass(frozen=True)
class Shape:
    n_samples: int
    n_features: int
    n_classes: int


@dataclass(frozen=True)
class DataFile:
    """A data file of the config: the key naming it, its absolute path, its content digest."""

    key: str  # data.path, or data.train / data.validation / data.test
    path: Path
    sha256: str

    @property
    def split(self) -> str | None:
        """The split it holds as given (train, validation, test); None: one table to split."""
        return None if self.key == "data.path" else self.key.removeprefix("data.")


@dataclass(frozen=True)
class DataSpec:
    """What the data stage makes: ``name``'s dataset (annlab.rules.DATASETS) with the settings
    it takes, or the user's ``files``; split by the fractions (three files: as given),
    standardised on the training split if ``standardize``."""

    name: str
    settings: Mapping[str, Any]  # the generator settings the dataset takes, none null
    standardize: bool
    train_fraction: float
    val_fraction: float
    test_fraction: float
    shape: Shape
    label: str  # the dataset as runs, models and figures name it: moons, iris, a file's stem
    files: tuple[DataFile, ...] = ()  # data=file: one table, or train, validation and test
    target: str | None = None  # data=file: the label column
    features: tuple[str, ...] | None = None  # data=file: its feature columns, as read

    @property
    def dataset(self) -> Dataset | None:
        return DATASETS.get(self.name)

    @property
    def function(self) -> str:
        """scikit-learn's function that makes or loads it; ``file`` for the user's files."""
        return self.dataset.function if self.dataset else FILE

    @property
    def input_name(self) -> str:
        """What its MLflow dataset inputs are named: the function, or the files' label."""
        return self.label if self.files else self.function

    @property
    def columns(self) -> list[str]:
        """The model's input columns: the file's features, else ``x1``, ``x2``, ..."""
        return list(self.features) if self.features else [
            f"x{i + 1}" for i in range(self.shape.n_features)]

    def split_sizes(self) -> tuple[int, int, int]:
        """Train/validation/test sample counts; the test split takes the rounding remainder."""
        return split_sizes(self.shape.n_samples, self.train_fraction, self.val_fraction)


@dataclass(frozen=True)
class ModelSpec:
    activation: str
    hidden_nodes: tuple[int, ...]  # one size per hidden layer


@dataclass(frozen=True)
class TrainSpec:
    learning_rate: float
    reg_lambda: float
    epochs: int
    batch_size: int | None  # None: full batch


@dataclass(frozen=True)
class PlotSpec:
    frames: int
    image_steps: int
    grid_size: int
    fps: float
    width: float
    height: float
    dpi: int

    @property
    def size(self) -> dict[str, float]:
        return {"width": self.width, "height": self.height, "dpi": self.dpi}


@dataclass(frozen=True)
class TrackingSpec:
    uri: str | None  # tracking.uri, else $MLFLOW_TRACKING_URI, else paths.store
    experiment: str
    parent_run_id: str | None  # a sweep's or study's job: its parent
    sweep: str | None
    run_name: str | None  # given outright


@dataclass(frozen=True)
class PrunerSpec:
    name: str
    warmup_epochs: int
    startup_trials: int
    reduction_factor: int


@dataclass(frozen=True)
class TuneSpec:
    """The study (`make tune`), and for a trial's job which trial it is."""

    study: str
    storage: str | None
    n_trials: int
    seed: int
    sampler: str
    report_every: int
    pruner: PrunerSpec
    space: Mapping[str, Mapping[str, Any]]  # dotted config key -> {type, low, high, ...}
    trial: int | None
    trial_id: int | None


@dataclass(frozen=True)
class RunSpec:
    """One run, resolved: typed sections, and the params, hash and name derived from them."""

    seed: int
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    plot: PlotSpec
    tracking: TrackingSpec
    tune: TuneSpec | None
    config: Mapping[str, Any]  # the resolved config, as config/config.yaml records it
    hash: str  # annlab.config_hash: of the parameters only
    name: str

    @cached_property
    def params(self) -> dict[str, Any]:
        """The experiment parameters, flattened to dotted keys (lists as their JSON text)."""
        return flatten(parameters(self.config, paths=True))

    @property
    def paths(self) -> Mapping[str, str]:
        """conf/paths, resolved (empty for a config composed without them)."""
        return self.config.get("paths") or {}

    @property
    def trial(self) -> bool:
        """Whether this is a trial's job of a study."""
        return self.tune is not None and self.tune.trial_id is not None


# -- the one function ------------------------------------------------------------------------

def resolve(cfg: DictConfig, baseline: RunSpec | None = None) -> RunSpec:
    """Check ``cfg`` and resolve it into a :class:`RunSpec`; ``baseline`` (the default config's
    spec) names the run by what differs from it (:func:`run_name`)."""
    config = {name: OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
              if OmegaConf.is_config(node) else node for name, node in cfg.items()}
    return resolve_plain(config, baseline)


def resolve_plain(config: dict[str, Any], baseline: RunSpec | None = None) -> RunSpec:
    """:func:`resolve` for a config that is already plain data (not changed: the spec's own
    config is completed with the files' digests and a study's default name)."""
    shape, files, features = check(config)
    config = dict(config)
    if files:
        config["data"] = {**config["data"], "sha256": {f.key.removeprefix("data."): f.sha256
                                                       for f in files}}
    if config.get("tune") is not None and not config["tune"].get("study"):
        config["tune"] = {**config["tune"], "study": dataset_label(config["data"])}
    d, t, p, tr = config["data"], config["train"], config["plot"], config["tracking"]
    dataset = DATASETS.get(d["name"])
    settings = {k: d[k] for k in dataset.settings} if dataset else {}
    data = DataSpec(d["name"], MappingProxyType(settings), bool(d.get("standardize", False)),
                    d["train_fraction"], d["val_fraction"], d["test_fraction"], shape,
                    dataset_label(d), files, d.get("target") if files else None, features)
    model = ModelSpec(config["model"]["activation"],
                      tuple(hidden_sizes(config["model"]["hidden_nodes"])))
    uri = tracking_uri(tr.get("uri"), (config.get("paths") or {}).get("store"))
    tune = _tune(config["tune"]) if config.get("tune") is not None else None
    return RunSpec(
        seed=config["seed"], data=data, model=model,
        train=TrainSpec(t["learning_rate"], t["reg_lambda"], t["epochs"], t.get("batch_size")),
        plot=PlotSpec(**{f.name: p[f.name] for f in fields(PlotSpec)}),
        tracking=TrackingSpec(uri, tr["experiment"], tr.get("parent_run_id"), tr.get("sweep"),
                              tr.get("run_name")),
        tune=tune, config=MappingProxyType(config), hash=config_hash(config),
        name=run_name(config, baseline.config if baseline is not None else None))


def _tune(t: dict[str, Any]) -> TuneSpec:
    return TuneSpec(t["study"], t.get("storage"), t["n_trials"], t["seed"], t["sampler"],
                    t["report_every"], PrunerSpec(**t["pruner"]),
                    MappingProxyType(search_space(t)), t.get("trial"), t.get("trial_id"))


# -- the checks ------------------------------------------------------------------------------

def select(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The value at a dotted key of a plain config."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def replaced(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a plain config with the values at these dotted keys replaced."""
    copy = dict(config)
    for key, value in values.items():
        node, *rest = key.split(".", 1)
        copy[node] = replaced(config.get(node) or {}, {rest[0]: value}) if rest else value
    return copy


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def check(config: Mapping[str, Any]
          ) -> tuple[Shape, tuple[DataFile, ...], tuple[str, ...] | None]:
    """Raise :class:`ConfigError` for the first value that cannot give a meaningful run;
    return the data's shape, its files (data=file) and their feature columns."""
    _check_keys(config)
    for rule in RULES:
        value = select(config, rule.key)
        _require(rule.ok(value), rule.key, value, rule.allowed)
    d = config["data"]
    _check_settings(d)
    fractions = [d["train_fraction"], d["val_fraction"], d["test_fraction"]]
    total = sum(fractions)
    _require(math.isclose(total, 1.0, abs_tol=1e-9), "data.*_fraction", fractions,
             f"fractions summing to 1 (these sum to {total:g})")
    if d["name"] == FILE:
        shape, files, features, given = _check_files(d, fractions)
    else:
        dataset = DATASETS[d["name"]]
        shape = Shape(*(dataset.size(d, key) for key in ("n_samples", "n_features",
                                                          "n_classes")))
        files, features, given = (), None, None
    sizes = given or split_sizes(shape.n_samples, d["train_fraction"], d["val_fraction"])
    if given is None:  # annlab splits the data (three files are used as given)
        key, value = (("data.n_samples", shape.n_samples) if d.get("n_samples") is not None
                      else ("data.*_fraction", fractions))  # a key the dataset takes
        _require(min(sizes) >= 2 * shape.n_classes, key, value,
                 f"enough samples for at least 2 per class in every split; these fractions "
                 f"give {'/'.join(map(str, sizes))} train/val/test of {shape.n_samples} "
                 f"samples for {shape.n_classes} classes")
    n_train = sizes[0]
    batch = config["train"].get("batch_size")
    _require(batch is None or batch <= n_train, "train.batch_size", batch,
             f"null (full batch) or at most the {n_train} rows of the training split")
    p, epochs = config["plot"], config["train"]["epochs"]
    frames = min(p["frames"], epochs + 1)  # epoch 0 to the last
    _require(p["image_steps"] <= frames, "plot.image_steps", p["image_steps"],
             f"at most the animation's {frames} frames (plot.frames, and train.epochs + 1)")
    experiment = select(config, "tracking.experiment")
    # its best models register as <experiment>-<dataset>, a name MLflow's registry takes
    _require(bool(experiment) and experiment == experiment.strip() and len(experiment) <= 200
             and not set("/:") & set(experiment) and experiment not in (".", ".."),
             "tracking.experiment", experiment, "a name of 1-200 characters without '/' or "
             "':' or spaces at its ends (its models register as <experiment>-<dataset>, and "
             "MLflow's registry refuses '/' and ':')")
    _check_memory(config, shape)
    if config.get("tune") is not None:
        _check_tune(config)
    return shape, files, features


def _check_keys(config: Mapping[str, Any]) -> None:
    """A key the schema does not have (Hydra's ``+key=value`` adds one) is refused."""
    places = [("", config, [f.name for f in fields(Config)])]
    places += [(f"{name}.", config[name], [f.name for f in fields(section)])
               for name, section in SECTIONS.items() if config.get(name) is not None]
    for prefix, node, known in places:
        for key in node:
            if key not in known:
                raise ConfigError(f"{prefix}{key}", node[key],
                                  f"the keys of {prefix.rstrip('.') or 'the config'}: "
                                  f"{', '.join(known)} (a misspelt key?)")


def _check_settings(d: Mapping[str, Any]) -> None:
    """The settings ``data.name``'s dataset takes hold allowed values; the others are null."""
    chosen = DATASETS.get(d["name"])
    takes = chosen.settings if chosen else FILE_SETTINGS
    function = chosen.function if chosen else "your files"
    for key, rule in DATA_RULES.items():
        value = d.get(key)
        if key in takes:
            _require(rule.ok(value), rule.key, value, rule.allowed)
        else:
            named = ", ".join(f"data.{k}" for k in takes) or "no generator settings"
            _require(value is None, rule.key, value,
                     f"null: data.name={d['name']} ({function}) takes {named}")
    if d["name"] == "classification":
        used = d["n_informative"] + d["n_redundant"]
        _require(used <= d["n_features"], "data.n_informative + data.n_redundant", used,
                 f"at most data.n_features={d['n_features']}")
        # make_classification puts 2 clusters per class on the corners of a hypercube
        _require(2 * d["n_classes"] <= 2 ** d["n_informative"], "data.n_informative",
                 d["n_informative"], f"enough informative features for {d['n_classes']} classes "
                 "of 2 clusters each: 2 * n_classes <= 2 ** n_informative")


def _check_files(d: Mapping[str, Any], fractions: list[float]
                 ) -> tuple[Shape, tuple[DataFile, ...], tuple[str, ...], tuple | None]:
    """data=file: one table (data.path) or three (data.train, data.validation, data.test),
    read and checked (:func:`annlab.tables.read`); the labels fit for the splits; a recorded
    data.sha256 the same as the files' content. Returns the shape, the files, their features
    and, for three files, each one's rows (the splits' sizes)."""
    from annlab import tables

    keys = ["path"] if d.get("path") else [k for k in ("train", "validation", "test")
                                           if d.get(k)]
    if d.get("path") and any(d.get(k) for k in ("train", "validation", "test")) or (
            not d.get("path") and len(keys) != 3):
        raise ConfigError("data.path", d.get("path"), "one table to split (data.path) or "
                          "three used as given (data.train, data.validation and data.test), "
                          "not both and not part of the three")
    features = tuple(d["features"]) if d.get("features") else None
    read = {k: tables.read(f"data.{k}", d[k], d["target"], features, memory_budget())
            for k in keys}
    first = read[keys[0]]
    for k, table in read.items():
        if table.features != first.features:
            raise tables.DataError(f"data.{k}", d[k], f"its columns differ from "
                                   f"data.{keys[0]}'s: {', '.join(table.features)} against "
                                   f"{', '.join(first.features)}")
    classes = first.classes
    if not 2 <= len(classes) <= MAX_CLASSES:
        raise tables.DataError(f"data.{keys[0]}", d[keys[0]], f"the target column "
                               f"{d['target']!r} holds {len(classes)} distinct values; allowed: "
                               f"2 to {MAX_CLASSES} classes")
    for k in keys[1:]:
        if unknown := sorted(set(read[k].classes.tolist()) - set(classes.tolist()), key=str)[:3]:
            raise tables.DataError(f"data.{k}", d[k], f"labels the training file does not "
                                   f"hold: {', '.join(map(repr, unknown))}")
    if len(keys) == 1:  # stratified splits: every class in every split
        values, counts = np.unique(first.y, return_counts=True)
        need = max(2, math.ceil(1 / min(fractions)))
        if counts.min() < need:
            raise tables.DataError("data.path", d["path"], f"class "
                                   f"{values[counts.argmin()].item()!r} "
                                   f"has {counts.min()} rows; a stratified split with these "
                                   f"fractions needs at least {need} of each class")
    recorded = d.get("sha256") or {}
    for k, table in read.items():
        if recorded.get(k) not in (None, table.sha256):
            raise tables.DataError(f"data.{k}", d[k], f"its content is not what data.sha256 "
                                   f"records ({recorded[k][:12]}...): it is {table.sha256[:12]}"
                                   "... now")
    rows = tuple(len(t.y) for t in read.values())
    shape = Shape(sum(rows), len(first.features), len(classes))
    return (shape, tuple(DataFile(f"data.{k}", t.path, t.sha256) for k, t in read.items()),
            first.features, rows if len(rows) == 3 else None)


def dataset_label(d: Mapping[str, Any]) -> str:
    """How runs, registered models and figures name a data section's dataset: its name, or for
    data=file the table's stem (three files: the stem they share, else their folder's name)."""
    if d["name"] != FILE:
        return d["name"]
    if d.get("path"):
        return Path(d["path"]).stem
    stems = [Path(d[k]).stem for k in ("train", "validation", "test") if d.get(k)]
    shared = os.path.commonprefix(stems).strip("-_. ") if stems else ""
    return shared or (Path(d["train"]).resolve().parent.name if d.get("train") else FILE)


def memory_needed(config: Mapping[str, Any], shape: Shape) -> dict[str, int]:
    """Rough bytes of a run's largest arrays, by the keys that size them."""
    p, epochs = config["plot"], config["train"]["epochs"]
    n_samples = shape.n_samples
    widths = [shape.n_features, *hidden_sizes(config["model"]["hidden_nodes"]),
              shape.n_classes]
    frames = min(p["frames"], epochs)
    return {
        # activations, errors and gradients of every layer, a few copies each
        "data.n_samples x model.hidden_nodes": 8 * 6 * n_samples * sum(widths),
        # per-epoch curves: Python floats, a DataFrame, MLflow's metric objects
        "train.epochs": 600 * epochs,
        # every frame's class probabilities on the grid
        "plot.frames x plot.grid_size": 8 * widths[-1] * frames * p["grid_size"] ** 2,
        # every frame's pixels, RGB and palette copies
        "plot.frames x plot.dpi": 5 * frames * round(p["width"] * p["dpi"])
        * round(p["height"] * p["dpi"]),
    }


def memory_budget() -> int:
    """Half of this machine's memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _check_memory(config: Mapping[str, Any], shape: Shape) -> None:
    needed, budget = memory_needed(config, shape), memory_budget()
    keys, largest = max(needed.items(), key=lambda item: item[1])
    _require(sum(needed.values()) <= budget, keys,
             " x ".join(str(select(config, k)) for k in keys.split(" x ")),
             f"values whose arrays fit in memory: this config needs about "
             f"{_gib(sum(needed.values()))}, {_gib(largest)} of it for these keys, and the limit "
             f"is {_gib(budget)} (half of this machine's memory)")


def search_space(tune: Mapping[str, Any]) -> dict[str, Any]:
    """``tune.space`` by dotted config key (``train.learning_rate``; ``seed`` for a top-level
    key, given without a section)."""
    found = {}
    for name, node in (tune.get("space") or {}).items():
        if isinstance(node, Mapping) and "type" in node:
            found[name] = node
        elif isinstance(node, Mapping):
            found |= {f"{name}.{key}": p for key, p in node.items()}
        else:
            found[name] = node
    return found


def _check_tune(config: Mapping[str, Any]) -> None:
    """The study's settings, then each searched key: its entry well formed (SPACE_RULES), the
    key one the config has, every value it can reach allowed by the key's own rule."""
    for rule in TUNE_RULES:
        value = select(config, rule.key)
        _require(rule.ok(value), rule.key, value, rule.allowed)
    space = search_space(config["tune"])
    _require(bool(space), "tune.space", {}, "at least one key to search")
    rules = {rule.key: rule for rule in RULES} | {r.key: r for r in DATA_RULES.values()}
    for key, p in space.items():
        where = f"tune.space.{key}"
        for row in SPACE_RULES:
            _require(row.ok(p), f"{where}.{row.part}".rstrip("."), row.value(p), row.allowed)
        if select(config, key, default="missing") == "missing":
            raise ConfigError(where, None, "keys of the config to search, such as "
                              "model.hidden_nodes or train.learning_rate")
        if (rule := rules.get(key)) is not None:
            for value in space_ends(p):
                _require(rule.ok(value), where, value, f"values {key} allows: {rule.allowed}")


def split_sizes(n_samples: int, train_fraction: float, val_fraction: float
                ) -> tuple[int, int, int]:
    """Train/validation/test sample counts; the test split takes the rounding remainder."""
    n_train, n_val = round(n_samples * train_fraction), round(n_samples * val_fraction)
    return n_train, n_val, n_samples - n_train - n_val


# -- what is derived -------------------------------------------------------------------------

def parameters(config: Mapping[str, Any], paths: bool = False) -> dict[str, Any]:
    """The experiment parameters of a plain config: every section but where it is tracked,
    where its files go and how a study drives it; the data section without the settings its
    dataset does not take (null). A data file counts by its content (data.sha256), not its
    path: ``paths`` keeps the paths too (what a run shows, not what its hash covers)."""
    found = {k: v for k, v in config.items() if k not in NOT_PARAMETERS}
    if isinstance(found.get("data"), Mapping):
        found["data"] = {k: v for k, v in found["data"].items() if v is not None and (
            paths or f"data.{k}" not in FILE_KEYS)}
    return found


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> values (``model.activation``: ``tanh``), lists kept as their JSON text."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def config_hash(config: Mapping[str, Any]) -> str:
    """Hash of everything that determines a run's results (where it is tracked does not)."""
    return hashlib.sha256(json.dumps(parameters(config), sort_keys=True).encode()
                          ).hexdigest()[:16]


def run_name(config: Mapping[str, Any], baseline: Mapping[str, Any] | None = None) -> str:
    """``<activation>-h<hidden>-lr<learning_rate>`` (``tanh-h10-lr0.1``), after the dataset
    unless it is moons (``circles-tanh-h10-lr0.5``), then a part for each key of
    :data:`NAME_PARTS` whose value differs from ``baseline`` (the default config), in that
    order: ``tanh-h10-lr0.1-e500-s3``. ``tracking.run_name``, when set, wins."""
    if given := select(config, "tracking.run_name"):
        return given
    hidden = "x".join(map(str, hidden_sizes(config["model"]["hidden_nodes"])))
    name = f"{config['model']['activation']}-h{hidden}-lr{config['train']['learning_rate']:g}"
    dataset = dataset_label(config["data"])
    if dataset != DEFAULT_DATASET:
        name = f"{dataset}-{name}"
    for key, part in NAME_PARTS.items():
        value = select(config, key)
        if key.startswith("data.") and (baseline is None or value is None
                                        or dataset != dataset_label(baseline["data"])):
            continue  # another dataset's settings are its own, not a variation
        if baseline is not None and value != select(baseline, key):
            name += f"-{part}{value:g}" if isinstance(value, float) else f"-{part}{value}"
    return name
