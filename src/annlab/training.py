"""Train and evaluate stages: plain functions between the data and the figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from annlab.data import Splits
from annlab.network import NeuralNetClassifier


@dataclass
class Snapshot:
    """The weights after ``epoch`` epochs (0: as initialised), for one frame of the boundary
    animation, and the training split's misclassification then."""

    epoch: int
    coefs: list[np.ndarray]
    intercepts: list[np.ndarray]
    train_misclassification: float


def frame_epochs(epochs: int, frames: int) -> np.ndarray:
    """Up to ``frames`` epochs spread evenly over 0..epochs (0: the untrained network),
    always including the first and the last."""
    return np.unique(np.linspace(0, epochs, min(frames, epochs + 1)).round().astype(int))


def spread(epochs, count: int) -> list[int]:
    """``count`` of ``epochs`` (sorted) spread evenly, first and last included."""
    epochs = list(epochs)
    if count <= 0 or not epochs:
        return []
    picks = np.unique(np.linspace(0, len(epochs) - 1, min(count, len(epochs))).round())
    return [int(epochs[int(i)]) for i in picks]


def train(model: NeuralNetClassifier, splits: Splits, snapshot_epochs,
          stop: Callable[[NeuralNetClassifier], bool] | None = None,
          watch: Callable[[NeuralNetClassifier], None] | None = None) -> list[Snapshot]:
    """Fit ``model`` on the training split, validating every epoch; keep weight snapshots.

    ``watch(model)`` sees every epoch trained. ``stop(model)``, asked after every epoch, ends
    training early when it returns True; the last epoch trained then gets a snapshot too, so
    the figures cover every epoch trained.
    The per-epoch curves stay on the model (``model.history_``), so whoever called this still
    has them when training diverges part way.
    """
    wanted = set(int(e) for e in snapshot_epochs)
    snapshots: list[Snapshot] = []

    def snapshot(m: NeuralNetClassifier) -> None:
        wrong = (m.history_["train_misclassification"][-1] if m.n_iter_ else
                 float(np.mean(m.predict(splits.X_train) != splits.y_train)))
        snapshots.append(Snapshot(m.n_iter_, [W.copy() for W in m.coefs_],
                                  [b.copy() for b in m.intercepts_], wrong))

    def after_epoch(m: NeuralNetClassifier) -> bool:
        if m.n_iter_ in wanted:
            snapshot(m)
        if m.n_iter_ == 0:  # the initial weights, before any epoch
            return False
        if watch is not None:
            watch(m)
        return stop is not None and stop(m)

    model.fit(splits.X_train, splits.y_train, eval_set=(splits.X_val, splits.y_val),
              callback=after_epoch)
    if not snapshots or snapshots[-1].epoch != model.n_iter_:  # stopped early
        snapshot(model)
    return snapshots


def history_frame(model: NeuralNetClassifier) -> pd.DataFrame:
    """The per-epoch curves as a table indexed by epoch (1..n_iter_).

    Only whole epochs: training interrupted while an epoch's values were being appended
    leaves the curves of unequal length, and the last, partial epoch is left out.
    """
    curves = {k: v for k, v in getattr(model, "history_", {}).items() if v}
    epochs = min((len(v) for v in curves.values()), default=0)
    index = pd.RangeIndex(1, epochs + 1, name="epoch")
    return pd.DataFrame({k: v[:epochs] for k, v in curves.items()}, index=index)


def evaluate(model: NeuralNetClassifier, splits: Splits) -> dict[str, float]:
    """Final accuracy on every split and the test misclassification (counts over n)."""
    scores = {}
    for name, X, y in (("train", splits.X_train, splits.y_train),
                       ("val", splits.X_val, splits.y_val),
                       ("test", splits.X_test, splits.y_test)):
        right = int(np.count_nonzero(model.predict(X) == y))
        scores[f"{name}_accuracy"] = right / len(y)
        scores[f"{name}_misclassification"] = (len(y) - right) / len(y)
    return {k: scores[k] for k in FINAL_METRICS}


FINAL_METRICS = ("train_accuracy", "val_accuracy", "test_accuracy", "test_misclassification")
