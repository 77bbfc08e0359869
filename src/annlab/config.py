"""The config schema (types, checked by OmegaConf) and its semantic checks.

Values live in ``conf/``; these dataclasses only say what each key may hold, so a wrong type or
an unknown key is refused while the config is composed. :func:`validate` then checks what types
cannot say (ranges, names, sums) before anything is tracked.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from omegaconf import MISSING, DictConfig, OmegaConf

from annlab.activations import ACTIVATIONS


@dataclass
class DataConfig:
    n_samples: int = MISSING
    noise: float = MISSING
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
    grid_size: int = MISSING  # probability grid points per axis
    fps: float = MISSING
    width: float = MISSING  # figure size in inches
    height: float = MISSING
    dpi: int = MISSING


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else the embedded sqlite store
    experiment: str = MISSING
    parent_run_id: str | None = None  # set for sweep jobs; never via MLFLOW_RUN_ID
    sweep: str | None = None  # the sweep's name, tagged on its children


@dataclass
class Config:
    seed: int = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


class ConfigError(ValueError):
    """A config value that is well typed but not allowed; the message names key and value."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"invalid config: {key}={value!r}; allowed: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


def hidden_sizes(hidden_nodes: Any) -> tuple[int, ...]:
    """``10`` -> ``(10,)``; ``[10, 5]`` -> ``(10, 5)``."""
    if isinstance(hidden_nodes, int):
        return (hidden_nodes,)
    return tuple(OmegaConf.to_container(hidden_nodes) if OmegaConf.is_config(hidden_nodes)
                 else hidden_nodes)


def split_sizes(n_samples: int, train_fraction: float, val_fraction: float) -> tuple[int, ...]:
    """Train/validation/test sample counts; the test split takes the rounding remainder."""
    n_train, n_val = round(n_samples * train_fraction), round(n_samples * val_fraction)
    return n_train, n_val, n_samples - n_train - n_val


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value that cannot give a meaningful run."""
    d, m, t, p = cfg.data, cfg.model, cfg.train, cfg.plot
    _require(_is_int(cfg.seed) and cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")
    _require(m.activation in ACTIVATIONS, "model.activation", m.activation,
             " | ".join(ACTIVATIONS))
    hidden = m.hidden_nodes
    sizes = [hidden] if not OmegaConf.is_list(hidden) else list(hidden)
    _require(len(sizes) > 0 and all(_is_int(h) and h >= 1 for h in sizes), "model.hidden_nodes",
             hidden if not OmegaConf.is_list(hidden) else sizes,
             "an integer >= 1, or a non-empty list of them")
    _require(math.isfinite(t.learning_rate) and t.learning_rate > 0, "train.learning_rate",
             t.learning_rate, "a finite number > 0")
    _require(math.isfinite(t.reg_lambda) and t.reg_lambda >= 0, "train.reg_lambda",
             t.reg_lambda, "a finite number >= 0")
    _require(t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
    _require(t.batch_size is None or t.batch_size >= 1, "train.batch_size", t.batch_size,
             "null (full batch) or an integer >= 1")
    _require(math.isfinite(d.noise) and d.noise >= 0, "data.noise", d.noise, "a number >= 0")
    fractions = {f"data.{k}_fraction": d[f"{k}_fraction"] for k in ("train", "val", "test")}
    for key, value in fractions.items():
        _require(0 < value < 1, key, value, "a fraction strictly between 0 and 1")
    total = sum(fractions.values())
    _require(math.isclose(total, 1.0, abs_tol=1e-9), "data.*_fraction",
             list(fractions.values()), f"fractions summing to 1 (these sum to {total:g})")
    sizes = split_sizes(d.n_samples, d.train_fraction, d.val_fraction)
    _require(min(sizes) >= 2, "data.n_samples", d.n_samples,
             f"enough samples for at least 2 per split (one per class); these fractions give "
             f"{'/'.join(map(str, sizes))} train/val/test")
    _require(p.frames >= 1, "plot.frames", p.frames, "an integer >= 1")
    _require(p.grid_size >= 2, "plot.grid_size", p.grid_size, "an integer >= 2")
    _require(p.fps > 0, "plot.fps", p.fps, "a number > 0")
    for key in ("width", "height", "dpi"):
        _require(p[key] > 0, f"plot.{key}", p[key], "a number > 0")
    _require(bool(cfg.tracking.experiment), "tracking.experiment", cfg.tracking.experiment,
             "a non-empty experiment name")


def resolved(cfg: DictConfig) -> dict:
    """The config as plain, fully resolved containers."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """Dotted keys -> values (``model.activation``: ``tanh``), lists kept as their text."""
    flat = pd.json_normalize(resolved(cfg), sep=".").iloc[0].to_dict()
    return {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in flat.items()}


def config_hash(cfg: DictConfig) -> str:
    """Hash of everything that determines a run's results (where it is tracked does not)."""
    content = {k: v for k, v in resolved(cfg).items() if k != "tracking"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def run_name(cfg: DictConfig) -> str:
    """``<activation>-h<hidden>-lr<learning_rate>``, e.g. ``tanh-h10-lr0.1``."""
    hidden = "x".join(map(str, hidden_sizes(cfg.model.hidden_nodes)))
    return f"{cfg.model.activation}-h{hidden}-lr{cfg.train.learning_rate:g}"
