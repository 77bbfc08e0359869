"""Weights to and from ``.npz`` (never pickled), and the model MLflow's pyfunc flavour loads.

The served model takes a table of raw features, its columns named as the training data's (a
file's header, else ``x1``, ``x2``, ...), as CSV, JSON records or split, and answers the class of
each row as the data labels it; ``params={"predict_method": "predict_proba"}`` asks for each
class's probability instead. A request it cannot score is refused in one line naming the column,
the row (counted from 0, as the request's list of rows) and the value: no rows, a missing column,
a value that is not a number, a missing (NaN or null) or infinite value, or one so large that the
arithmetic overflows (the standardisation or the network's output is not finite). A huge value
whose result stays finite is scored: tanh and sigmoid saturate, so their answer is the limit.
Columns the model does not take are ignored, as MLflow's signature check ignores them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from annlab.network import NeuralNetClassifier

PREDICT_METHODS = ("predict", "predict_proba")
TARGET = "target"  # the label column of generated data's tables (its datasets, `make data`)


def feature_names(n_features: int) -> list[str]:
    """Generated data's input columns: ``x1``, ``x2``, ..."""
    return [f"x{i + 1}" for i in range(n_features)]


def features(X: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
    """Raw feature rows as the served model takes them."""
    return pd.DataFrame(X, columns=columns or feature_names(X.shape[1]))


def table(X: np.ndarray, y: np.ndarray, columns: list[str], target: str) -> pd.DataFrame:
    """A split as a table: its feature columns, then the labels."""
    frame = features(X, columns)
    frame[target] = y
    return frame


def save_weights(model: NeuralNetClassifier, path: Path, scaler=None,
                 columns: list[str] | None = None) -> Path:
    """The network's weights, its input ``columns`` and, when its inputs are standardised, the
    fitted scaler's mean and scale (so the saved model takes raw features)."""
    layers = {f"coef_{i}": W for i, W in enumerate(model.coefs_)}
    layers |= {f"intercept_{i}": b for i, b in enumerate(model.intercepts_)}
    if scaler is not None:
        layers |= {"scaler_mean": scaler.mean_, "scaler_scale": scaler.scale_}
    if columns is not None:
        layers["columns"] = np.array(columns, dtype=str)
    np.savez(path, activation=np.array(model.activation), classes=model.classes_,
             n_iter=np.array(model.n_iter_), **layers)
    return path


def load_columns(path: Path) -> list[str] | None:
    """The input columns saved with the weights (None for weights saved without them)."""
    with np.load(path, allow_pickle=False) as f:
        return [str(c) for c in f["columns"]] if "columns" in f.files else None


def load_scaling(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, scale) of the scaler saved with the weights, or None when there is none."""
    with np.load(path, allow_pickle=False) as f:
        return (f["scaler_mean"], f["scaler_scale"]) if "scaler_mean" in f.files else None


def load_weights(path: Path) -> NeuralNetClassifier:
    """A fitted classifier from :func:`save_weights` output; ``allow_pickle=False`` throughout."""
    with np.load(path, allow_pickle=False) as f:
        n_layers = sum(k.startswith("coef_") for k in f.files)
        coefs = [f[f"coef_{i}"] for i in range(n_layers)]
        intercepts = [f[f"intercept_{i}"] for i in range(n_layers)]
        model = NeuralNetClassifier(hidden_nodes=tuple(W.shape[1] for W in coefs[:-1]),
                                    activation=str(f["activation"]))
        model.classes_, model.n_iter_ = f["classes"], int(f["n_iter"])
    model.coefs_, model.intercepts_ = coefs, intercepts
    model.n_features_in_ = coefs[0].shape[0]
    return model


class PyfuncModel:
    """What ``mlflow.pyfunc.load_model`` returns. MLflow has already checked the input
    against the model's signature (its columns and their types) when it serves it; ``predict``
    checks again, and checks what a signature cannot: the values."""

    def __init__(self, model: NeuralNetClassifier, scaling=None,
                 columns: list[str] | None = None):
        self.model, self.scaling = model, scaling
        self.columns = columns or feature_names(model.n_features_in_)

    def predict(self, model_input, params=None):
        """Each row's class, or with ``predict_method=predict_proba`` each class's probability;
        a request the model cannot score raises :func:`refused`'s exception (MLflow's 400)."""
        method = (params or {}).get("predict_method", "predict")
        if method not in PREDICT_METHODS:
            raise refused(f"predict_method={method!r}; allowed: {' | '.join(PREDICT_METHODS)}")
        raw = self._rows(model_input)
        with np.errstate(over="ignore", invalid="ignore"):  # checked below, cell by cell
            # StandardScaler.transform's arithmetic
            X = raw if self.scaling is None else (raw - self.scaling[0]) / self.scaling[1]
            _refuse_cells(self.columns, raw, ~np.isfinite(X),
                          "too large for the model (standardised as in training, it overflows "
                          "float64)")
            proba = self.model.predict_proba(X)
        # ReLU's output can overflow (tanh and sigmoid saturate): named by the row's largest input
        overflowed = np.zeros(X.shape, dtype=bool)
        rows = np.flatnonzero(~np.isfinite(proba).all(axis=1))
        overflowed[rows, np.abs(X[rows]).argmax(axis=1)] = True
        _refuse_cells(self.columns, raw, overflowed,
                      "too large for the model (the network's output overflows float64)")
        if method == "predict_proba":
            return pd.DataFrame(proba, columns=[f"p_{c}" for c in self.model.classes_])
        return self.model.classes_[proba.argmax(axis=1)]  # NeuralNetClassifier.predict

    def _rows(self, model_input) -> np.ndarray:
        """The request's rows as float64, its columns in the model's order; refused naming the
        column, the row and the value when one is not a finite number."""
        frame = self._frame(model_input)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            given = ", ".join(map(str, frame.columns)) or "none"
            raise refused(f"column {', '.join(missing)} missing: the model takes the columns "
                          f"{', '.join(self.columns)} (got {given})")
        twice = [c for c in self.columns if (frame.columns == c).sum() > 1]
        if twice:
            raise refused(f"column {', '.join(twice)} given more than once")
        if len(frame) == 0:
            raise refused(f"the request has no rows: the model scores rows of "
                          f"{', '.join(self.columns)}")
        raw = np.column_stack([_numbers(frame[c], c) for c in self.columns])
        _refuse_cells(self.columns, raw, ~np.isfinite(raw), "the model scores finite numbers only")
        return raw

    def _frame(self, model_input) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            return model_input
        array = np.asarray(model_input, dtype=object)  # ragged lists too: a 1-d array
        if array.ndim != 2 or array.shape[1] != len(self.columns):
            raise refused(f"the model takes a table of the columns {', '.join(self.columns)}; "
                          f"got {type(model_input).__name__} of shape {array.shape}")
        return pd.DataFrame(array, columns=self.columns)


def _numbers(column: pd.Series, name: str) -> np.ndarray:
    """``column`` as float64 (missing values as NaN), as MLflow's signature check converts it;
    refused naming the first value that is not a number."""
    try:
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        for row, value in enumerate(column):
            try:
                float(value)
            except (TypeError, ValueError):
                raise refused(f"{name} in row {row} is {_shown(value)}: not a number") from None
        raise


def _refuse_cells(columns: list[str], raw: np.ndarray, bad: np.ndarray, why: str) -> None:
    """Refused naming the first ``bad`` cell (by row, then column), its raw value and ``why``,
    and how many more there are."""
    rows, cols = np.nonzero(bad)
    if len(rows):
        row, col = rows[0], cols[0]
        more = f" (and {len(rows) - 1} more like it)" if len(rows) > 1 else ""
        raise refused(f"{columns[col]} in row {row} is {_shown(raw[row, col])}: {why}{more}")


def _shown(value) -> str:
    if isinstance(value, float | np.floating):
        return "missing (NaN or null)" if np.isnan(value) else repr(float(value))
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def refused(message: str) -> Exception:
    """MLflow's exception for a request the model cannot score: a 400 (INVALID_PARAMETER_VALUE)
    whose JSON body is ``message``, one line, with no stack trace."""
    return _refusal_type()(message)


@functools.cache
def _refusal_type() -> type:
    """MLflow's scoring server writes the whole request table, over several lines, before the
    message of any MlflowException ``predict`` raises (``Failed to predict data '<table>'.
    Error: <message>``); this one's JSON body keeps its message alone. Made on first use:
    importing MLflow takes seconds, and training never needs it."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class Refused(MlflowException):
        def __init__(self, message: str):
            super().__init__(message, INVALID_PARAMETER_VALUE)
            self.line = message

        def serialize_as_json(self) -> str:
            return json.dumps({**json.loads(super().serialize_as_json()), "message": self.line})

    return Refused


def _load_pyfunc(data_path: str) -> PyfuncModel:
    """Entry point named by the MLmodel file (``loader_module: annlab.model_io``)."""
    path = Path(data_path)
    return PyfuncModel(load_weights(path), load_scaling(path), load_columns(path))
