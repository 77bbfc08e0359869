"""Weights to and from ``.npz`` (never pickled), and the loader MLflow's pyfunc flavour calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from annlab.network import NeuralNetClassifier


def save_weights(model: NeuralNetClassifier, path: Path) -> Path:
    layers = {f"coef_{i}": W for i, W in enumerate(model.coefs_)}
    layers |= {f"intercept_{i}": b for i, b in enumerate(model.intercepts_)}
    np.savez(path, activation=np.array(model.activation), classes=model.classes_,
             n_iter=np.array(model.n_iter_), **layers)
    return path


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
    """What ``mlflow.pyfunc.load_model`` returns: ``predict`` gives class labels."""

    def __init__(self, model: NeuralNetClassifier):
        self.model = model

    def predict(self, model_input, params=None):
        return self.model.predict(np.asarray(model_input, dtype=np.float64))


def _load_pyfunc(data_path: str) -> PyfuncModel:
    """Entry point named by the MLmodel file (``loader_module: annlab.model_io``)."""
    return PyfuncModel(load_weights(Path(data_path)))
