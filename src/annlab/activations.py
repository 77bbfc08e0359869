"""Hidden-layer activations and their derivatives: two small tables, as in scikit-learn's MLP.

Kept apart from the estimator so that code which only needs the names (config validation, a
sweep's launching process) does not import scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _sigmoid(z):
    # 1 / (1 + exp(-z)) with numpy's SIMD exp, faster than scipy's expit (which calls libm per
    # element), and no scipy import. exp may overflow to inf, giving exactly 0.
    np.exp(np.negative(z, out=z), out=z)
    z += 1.0
    return np.divide(1.0, z, out=z)


def _tanh(z):
    # tanh(z) = 2 / (1 + exp(-2z)) - 1: the same function, faster than np.tanh on float64
    # where numpy has no SIMD tanh (AVX2). exp may overflow to inf, giving exactly -1.
    np.exp(np.multiply(z, -2.0, out=z), out=z)
    z += 1.0
    np.divide(2.0, z, out=z)
    z -= 1.0
    return z


# Activations work in place on the pre-activation z (it is not needed afterwards) and return it.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "relu": lambda z: np.maximum(z, 0.0, out=z),
}
# f'(z) expressed through a = f(z), each formula matching its own f; in place on a as well.
DERIVATIVES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": lambda a: np.subtract(1.0, np.square(a, out=a), out=a),
    "sigmoid": lambda a: np.multiply(a, np.subtract(1.0, a), out=a),
    "relu": lambda a: np.greater(a, 0.0, out=a),
}
