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
    return len(sizes) > 0 and all(is_int(h) and h >= 1 for h in sizes)


# Checked in this order; the first broken rule is reported.
RULES = (
    Rule("seed", None, lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    Rule("model.activation", "activation", lambda v: v in ACTIVATIONS, " | ".join(ACTIVATIONS)),
    Rule("model.hidden_nodes", "hidden_nodes", _hidden_ok,
         "an integer >= 1, or a non-empty list of them"),
    Rule("train.learning_rate", "learning_rate", lambda v: is_number(v) and v > 0,
         "a finite number > 0"),
    Rule("train.reg_lambda", "reg_lambda", lambda v: is_number(v) and v >= 0,
         "a finite number >= 0"),
    Rule("train.epochs", "epochs", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    Rule("train.batch_size", "batch_size", lambda v: v is None or (is_int(v) and v >= 1),
         "null (full batch) or an integer >= 1"),
    Rule("data.noise", None, lambda v: is_number(v) and v >= 0, "a number >= 0"),
    *(Rule(f"data.{split}_fraction", None, lambda v: is_number(v) and 0 < v < 1,
           "a fraction strictly between 0 and 1") for split in ("train", "val", "test")),
    Rule("plot.frames", None, lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    Rule("plot.grid_size", None, lambda v: is_int(v) and v >= 2, "an integer >= 2"),
    Rule("plot.fps", None, lambda v: is_number(v) and v > 0, "a number > 0"),
    *(Rule(f"plot.{key}", None, lambda v: is_number(v) and v > 0, "a number > 0")
      for key in ("width", "height", "dpi")),
)
ESTIMATOR_RULES = {rule.param: rule for rule in RULES if rule.param}
