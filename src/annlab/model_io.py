"""Weights to and from ``.npz`` (never pickled), and the model MLflow's pyfunc flavour loads.

The served model takes a table of raw features, its columns named as the training data's (a
file's header, else ``x1``, ``x2``, ...), as CSV, JSON records or split, and answers the class of
each row as the data labels it; ``params={"predict_method": "predict_proba"}`` asks for each
class's probability instead.
"""

from __future__ import annotations

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
    """What ``mlflow.pyfunc.load_model`` returns (MLflow has already checked the input
    against the model's signature: its columns and their types)."""

    def __init__(self, model: NeuralNetClassifier, scaling=None,
                 columns: list[str] | None = None):
        self.model, self.scaling = model, scaling
        self.columns = columns or feature_names(model.n_features_in_)

    def predict(self, model_input, params=None):
        method = (params or {}).get("predict_method", "predict")
        if method not in PREDICT_METHODS:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(f"predict_method={method!r}; allowed: "
                                  f"{' | '.join(PREDICT_METHODS)}", INVALID_PARAMETER_VALUE)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(
            np.asarray(model_input), columns=self.columns)
        X = frame[self.columns].to_numpy(dtype=np.float64)
        if self.scaling is not None:  # StandardScaler.transform's arithmetic
            mean, scale = self.scaling
            X = (X - mean) / scale
        if method == "predict_proba":
            return pd.DataFrame(self.model.predict_proba(X),
                                columns=[f"p_{c}" for c in self.model.classes_])
        return self.model.predict(X)


def _load_pyfunc(data_path: str) -> PyfuncModel:
    """Entry point named by the MLmodel file (``loader_module: annlab.model_io``)."""
    path = Path(data_path)
    return PyfuncModel(load_weights(path), load_scaling(path), load_columns(path))
