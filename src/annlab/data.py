"""Data stage: a scikit-learn dataset (made or shipped) or the user's table split into
stratified train/validation/test samples, or the user's three files as given; standardised on the
training split if the spec says so."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import sklearn.datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from annlab import tables
from annlab.spec import memory_budget, split_sizes

if TYPE_CHECKING:
    from annlab.spec import DataSpec


def derive_seed(seed: int, stream: str) -> int:
    """An independent 32-bit seed per named stream ("data", "model"), all from one config seed.

    scikit-learn's generators take an int, so each gets one drawn from a SeedSequence: no
    global numpy state is ever touched.
    """
    key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")
    return int(np.random.SeedSequence(seed, spawn_key=(key,)).generate_state(1)[0])


@dataclass(frozen=True)
class Splits:
    """The raw splits; with ``standardize``, the network sees every split through
    :attr:`scaler`, fitted on the training split only (:meth:`inputs`, :meth:`scaled`)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    standardize: bool = False

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "standardize"}

    @cached_property
    def scaler(self) -> StandardScaler | None:
        return StandardScaler().fit(self.X_train) if self.standardize else None

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """Raw feature rows as the network takes them."""
        return X if self.scaler is None else self.scaler.transform(X)

    def scaled(self) -> Splits:
        """The splits as the network sees them."""
        if self.scaler is None:
            return self
        return Splits(*(self.inputs(a) if name.startswith("X") else a
                        for name, a in self.arrays().items()))

    def digest(self) -> str:
        """SHA-256 over every array's name, dtype, shape and bytes, and the scaler's mean and
        scale when there is one."""
        h = hashlib.sha256()
        arrays = self.arrays()
        if self.scaler is not None:
            arrays |= {"scaler_mean": self.scaler.mean_, "scaler_scale": self.scaler.scale_}
        for name, a in arrays.items():
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(np.ascontiguousarray(a).view(np.uint8))  # its bytes, without a copy
        return h.hexdigest()

    def by_context(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(features, labels) of each split, by its MLflow dataset context."""
        return {"train": (self.X_train, self.y_train), "validation": (self.X_val, self.y_val),
                "test": (self.X_test, self.y_test)}

    def context_digests(self) -> dict[str, str]:
        """A digest per split, derived from :meth:`digest` (``annlab.data_hash``)."""
        whole = self.digest()
        return {context: hashlib.sha256(f"{whole}:{context}".encode()).hexdigest()[:16]
                for context in self.by_context()}

    def save(self, path) -> None:
        np.savez(path, standardize=np.array(self.standardize), **self.arrays())

    @classmethod
    def load(cls, path) -> Splits:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k != "standardize"}
            return cls(**arrays, standardize=bool(f["standardize"]) if "standardize" in f
                       else False)


def generate(data: DataSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of the spec's dataset: a generator given its settings and a seed; the shipped
    data as scikit-learn has it, labelled by its classes' names with ``label_names``; or the
    user's table."""
    if data.files:
        table = tables.read(data.files[0].key, str(data.files[0].path), data.target,
                            data.features, memory_budget())
        return table.X, table.y
    make = getattr(sklearn.datasets, data.function)
    if data.dataset.shipped:
        bunch = make()
        names = data.settings.get("label_names")
        return bunch.data, bunch.target_names[bunch.target] if names else bunch.target
    settings = dict(data.settings)
    if data.name == "blobs":
        settings["centers"] = settings.pop("n_classes")
    X, y = make(**settings, random_state=seed)
    return X, y


def make_splits(data: DataSpec, seed: int) -> Splits:
    """The spec's dataset, then two stratified splits (the test split takes the remainder);
    three files are the splits as given."""
    if len(data.files) == 3:
        parts = [tables.read(f.key, str(f.path), data.target, data.features, memory_budget())
                 for f in data.files]
        return Splits(*(a for t in parts for a in (t.X, t.y)), standardize=data.standardize)
    rng = derive_seed(seed, "data")
    X, y = generate(data, rng)
    _, n_val, n_test = split_sizes(len(y), data.train_fraction, data.val_fraction)
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=n_test, stratify=y, random_state=rng)
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=rng)
    return Splits(X_train, y_train, X_val, y_val, X_test, y_test, standardize=data.standardize)


def write_files(data: DataSpec, seed: int, out_dir) -> dict[str, object]:
    """The spec's splits (raw features, as made) as three CSV files with a header in
    ``out_dir``: ``train.csv``, ``validation.csv``, ``test.csv``."""
    from annlab.model_io import TARGET

    return tables.write_splits(make_splits(data, seed), data.columns, data.target or TARGET,
                               out_dir)
