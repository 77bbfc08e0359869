"""Data stage: make_moons split into stratified train/validation/test samples."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

import numpy as np
from sklearn.datasets import make_moons
from sklearn.model_selection import train_test_split

from annlab.config import split_sizes


def derive_seed(seed: int, stream: str) -> int:
    """An independent 32-bit seed per named stream ("data", "model"), all from one config seed.

    scikit-learn's generators take an int, so each gets one drawn from a SeedSequence: no
    global numpy state is ever touched.
    """
    key = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")
    return int(np.random.SeedSequence(seed, spawn_key=(key,)).generate_state(1)[0])


@dataclass(frozen=True)
class Splits:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def digest(self) -> str:
        """SHA-256 over every array's name, dtype, shape and bytes."""
        h = hashlib.sha256()
        for name, a in self.arrays().items():
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
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
        np.savez(path, **self.arrays())

    @classmethod
    def load(cls, path) -> Splits:
        with np.load(path, allow_pickle=False) as f:
            return cls(**{k: f[k] for k in f.files})


def make_splits(n_samples: int, noise: float, train_fraction: float, val_fraction: float,
                seed: int) -> Splits:
    """make_moons, then two stratified splits; the test split takes the remainder."""
    n_train, n_val, n_test = split_sizes(n_samples, train_fraction, val_fraction)
    rng = derive_seed(seed, "data")
    X, y = make_moons(n_samples=n_samples, noise=noise, random_state=rng)
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=n_test, stratify=y, random_state=rng)
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=rng)
    return Splits(X_train, y_train, X_val, y_val, X_test, y_test)
