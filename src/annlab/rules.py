"""What each parameter may hold: one table read by the config checks and by the estimator.

Imports neither scikit-learn nor Hydra, so a sweep's launching process can check every config
of its grid cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from annlab.activations import ACTIVATIONS


def is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def hidden_sizes(hidden_nodes: Any) -> tuple[int, ...]:
    """``10`` -> ``(10,)``; ``[10, 5]`` (a list, tuple or OmegaConf ListConfig) -> ``(10, 5)``."""
    if isinstance(hidden_nodes, Sequence) and not isinstance(hidden_nodes, str):
        return tuple(hidden_nodes)
    return (hidden_nodes,)


@dataclass(frozen=True)
class Rule:
    key: str  # the config key
    param: str | None  # the estimator's parameter of the same meaning, if any
    ok: Callable[[Any], bool]
    allowed: str

    def message(self, name: str, value: Any) -> str:
        return f"{name}={value!r}; allowed: {self.allowed}"


def _hidden_ok(value: Any) -> bool:
    sizes = hidden_sizes(value)
    return 0 < len(sizes) <= MAX_LAYERS and all(is_int(h) and 1 <= h <= MAX_WIDTH for h in sizes)


def _int_in(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: is_int(v) and low <= v <= high


def _number_in(low: float, high: float, *, low_open: bool = False) -> Callable[[Any], bool]:
    return lambda v: is_number(v) and (low < v if low_open else low <= v) and v <= high


# Upper bounds: beyond them a run cannot fit in memory or finish in a sane time; the combined
# memory of a config is checked by annlab.config.validate.
MAX_LAYERS, MAX_WIDTH = 10, 10_000
MAX_SAMPLES = 1_000_000
MAX_EPOCHS = 1_000_000
MAX_FRAMES, MAX_GRID, MAX_DPI, MAX_INCHES = 1_000, 1_000, 600, 50


@dataclass(frozen=True)
class Dataset:
    """A choice of ``conf/data/``: scikit-learn's function that makes or loads it, the
    ``data.*`` settings it takes (every other setting must be null), and its shape: a number,
    or the setting that gives it."""

    function: str  # in sklearn.datasets; also the name of the run's MLflow dataset inputs
    settings: tuple[str, ...]
    n_features: int | str
    n_classes: int | str
    n_samples: int | str = "n_samples"

    def size(self, data: Any, key: str) -> int:
        """``n_features``, ``n_classes`` or ``n_samples`` of the config section ``data``."""
        value = getattr(self, key)
        return value if isinstance(value, int) else data[value]

    @property
    def shipped(self) -> bool:
        """Data scikit-learn ships (a fixed table) rather than makes."""
        return isinstance(self.n_samples, int)


MAX_CLASSES = 6  # one colour each in the figures
DATASETS = {
    "moons": Dataset("make_moons", ("n_samples", "noise"), 2, 2),
    "circles": Dataset("make_circles", ("n_samples", "noise", "factor"), 2, 2),
    "blobs": Dataset("make_blobs", ("n_samples", "n_features", "n_classes", "cluster_std"),
                     "n_features", "n_classes"),
    "classification": Dataset("make_classification", (
        "n_samples", "n_features", "n_informative", "n_redundant", "n_classes", "class_sep"),
        "n_features", "n_classes"),
    "iris": Dataset("load_iris", ("label_names",), 4, 3, 150),
    "wine": Dataset("load_wine", ("label_names",), 13, 3, 178),
    "breast_cancer": Dataset("load_breast_cancer", ("label_names",), 30, 2, 569),
}
FILE = "file"  # data=file: the user's own table(s); their shape is read from them
FILE_SETTINGS = ("path", "target", "features", "train", "validation", "test")

# Checked in this order; the first broken rule is reported.
RULES = (
    Rule("seed", None, lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    Rule("model.activation", "activation", lambda v: v in ACTIVATIONS, " | ".join(ACTIVATIONS)),
    Rule("model.hidden_nodes", "hidden_nodes", _hidden_ok,
         f"an integer from 1 to {MAX_WIDTH:,}, or a list of 1 to {MAX_LAYERS} of them"),
    Rule("train.learning_rate", "learning_rate", lambda v: is_number(v) and v > 0,
         "a finite number > 0"),
    Rule("train.reg_lambda", "reg_lambda", lambda v: is_number(v) and v >= 0,
         "a finite number >= 0"),
    Rule("train.epochs", "epochs", _int_in(1, MAX_EPOCHS), f"an integer from 1 to {MAX_EPOCHS:,}"),
    Rule("train.batch_size", "batch_size", lambda v: v is None or (is_int(v) and v >= 1),
         "null (full batch) or an integer >= 1"),
    Rule("data.name", None, lambda v: v in DATASETS or v == FILE, " | ".join([*DATASETS, FILE])),
    *(Rule(f"data.{split}_fraction", None, lambda v: is_number(v) and 0 < v < 1,
           "a fraction strictly between 0 and 1") for split in ("train", "val", "test")),
    Rule("plot.frames", None, _int_in(1, MAX_FRAMES), f"an integer from 1 to {MAX_FRAMES:,}"),
    Rule("plot.image_steps", None, _int_in(0, MAX_FRAMES),
         f"an integer from 0 (none) to {MAX_FRAMES:,}"),
    Rule("plot.grid_size", None, _int_in(2, MAX_GRID), f"an integer from 2 to {MAX_GRID:,}"),
    Rule("plot.fps", None, _number_in(0, 100, low_open=True), "a number > 0, up to 100"),
    Rule("plot.dpi", None, _number_in(1, MAX_DPI), f"a number from 1 to {MAX_DPI}"),
    *(Rule(f"plot.{key}", None, _number_in(0, MAX_INCHES, low_open=True),
           f"a number of inches > 0, up to {MAX_INCHES}") for key in ("width", "height")),
)
ESTIMATOR_RULES = {rule.param: rule for rule in RULES if rule.param}


# What each generator setting may hold, when its dataset takes it.
DATA_RULES = {rule.key.removeprefix("data."): rule for rule in (
    Rule("data.n_samples", None, _int_in(1, MAX_SAMPLES), f"an integer up to {MAX_SAMPLES:,}"),
    Rule("data.noise", None, lambda v: is_number(v) and v >= 0, "a number >= 0"),
    Rule("data.factor", None, lambda v: is_number(v) and 0 < v < 1,
         "a number strictly between 0 and 1 (the inner circle's radius over the outer's)"),
    Rule("data.n_features", None, _int_in(2, MAX_WIDTH), f"an integer from 2 to {MAX_WIDTH:,}"),
    Rule("data.n_classes", None, _int_in(2, MAX_CLASSES),
         f"an integer from 2 to {MAX_CLASSES}"),
    Rule("data.cluster_std", None, lambda v: is_number(v) and v > 0, "a number > 0"),
    Rule("data.n_informative", None, _int_in(1, MAX_WIDTH),
         f"an integer from 1 to {MAX_WIDTH:,}"),
    Rule("data.n_redundant", None, _int_in(0, MAX_WIDTH), f"an integer from 0 to {MAX_WIDTH:,}"),
    Rule("data.class_sep", None, lambda v: is_number(v) and v > 0, "a number > 0"),
    Rule("data.label_names", None, lambda v: v is None or isinstance(v, bool),
         "true (scikit-learn's names of the classes as labels) or false (their numbers)"),
    *(Rule(f"data.{key}", None, lambda v: v is None or (isinstance(v, str) and bool(v)),
           "null or the path of a CSV or Parquet file") for key in ("path", "train", "validation",
                                                                    "test")),
    Rule("data.target", None, lambda v: isinstance(v, str) and bool(v),
         "the name of the table's label column"),
    Rule("data.features", None, lambda v: v is None or (
        isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
        and all(isinstance(c, str) and c for c in v)),
        "null (every column but the target) or a list of distinct column names"),
)}


# `make tune`'s settings (conf/tune/); a searched key's range is checked against its own rule.
SAMPLERS = ("tpe", "random")
PRUNERS = ("threshold", "median", "successive_halving", "none")
TUNE_RULES = (
    Rule("tune.study", None, lambda v: v is None or (isinstance(v, str) and bool(v)),
         "null (the dataset's name) or a non-empty study name"),
    Rule("tune.n_trials", None, _int_in(1, 100_000), "an integer from 1 to 100,000"),
    Rule("tune.report_every", None, _int_in(1, MAX_EPOCHS), "an integer >= 1"),
    Rule("tune.sampler", None, lambda v: v in SAMPLERS, " | ".join(SAMPLERS)),
    Rule("tune.pruner.name", None, lambda v: v in PRUNERS, " | ".join(PRUNERS)),
    Rule("tune.pruner.warmup_epochs", None, _int_in(0, MAX_EPOCHS), "an integer >= 0"),
    Rule("tune.pruner.startup_trials", None, _int_in(0, 100_000), "an integer >= 0"),
    Rule("tune.pruner.reduction_factor", None, _int_in(2, 100), "an integer from 2 to 100"),
)


@dataclass(frozen=True)
class SpaceRule:
    """A check of one searched key's entry in ``tune.space`` (a mapping ``p``): ``part`` is the
    sub-key the message names, ``ok(p)`` the check, ``value(p)`` what the message shows."""

    part: str
    ok: Callable[[Any], bool]
    value: Callable[[Any], Any]
    allowed: str


SPACE_TYPES = {"categorical": ("type", "choices"), "int": ("type", "low", "high", "log"),
               "float": ("type", "low", "high", "log")}


def _bounds(p: Any) -> list:
    return [p.get("low"), p.get("high")]


def _numbers(p: Any) -> bool:
    low, high = _bounds(p)
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) \
        and low < high


# Checked in this order, each only once the rows before it hold.
SPACE_RULES = (
    SpaceRule("", lambda p: isinstance(p, dict), lambda p: p,
              "a mapping such as {type: float, low: 0.01, high: 10, log: true} or "
              "{type: categorical, choices: [a, b]}"),
    SpaceRule("type", lambda p: p.get("type") in SPACE_TYPES, lambda p: p.get("type"),
              " | ".join(SPACE_TYPES)),
    SpaceRule("", lambda p: set(p) <= set(SPACE_TYPES[p["type"]]), lambda p: sorted(
        set(p) - set(SPACE_TYPES[p["type"]])), "the keys of its type: type, choices "
        "(categorical) or type, low, high, log (int, float)"),
    SpaceRule("choices", lambda p: p["type"] != "categorical" or (
        isinstance(p.get("choices"), list) and len(p["choices"]) > 0),
        lambda p: p.get("choices"), "a non-empty list of values"),
    SpaceRule("low/high", lambda p: p["type"] == "categorical" or _numbers(p), _bounds,
              "a range of numbers with low < high"),
    SpaceRule("low", lambda p: p["type"] == "categorical" or not p.get("log") or p["low"] > 0,
              lambda p: p.get("low"), "a number > 0 (log scale)"),
    SpaceRule("low/high", lambda p: p["type"] != "int" or all(
        float(v).is_integer() for v in _bounds(p)), _bounds, "integers for an int range"),
)


def space_ends(p: dict) -> list:
    """The values a searched key can reach that its own rule must allow: every choice, or
    both ends of the range."""
    if p["type"] == "categorical":
        return list(p["choices"])
    return [int(v) for v in _bounds(p)] if p["type"] == "int" else _bounds(p)
