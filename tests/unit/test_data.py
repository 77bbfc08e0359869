"""The data stage: exact, stratified, seeded splits and a hash that tracks their content."""

import numpy as np

from annlab.data import Splits, derive_seed, make_splits


def test_split_sizes_and_stratification():
    s = make_splits(1000, 0.2, 0.6, 0.2, seed=0)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (600, 200, 200)
    for y in (s.y_train, s.y_val, s.y_test):
        assert np.bincount(y)[0] == len(y) // 2
    rows = np.concatenate([s.X_train, s.X_val, s.X_test])
    assert len(np.unique(rows, axis=0)) == 1000  # disjoint


def test_same_seed_same_bits_other_seed_other_data():
    a, b, c = (make_splits(300, 0.1, 0.5, 0.25, seed) for seed in (3, 3, 4))
    assert a.digest() == b.digest() != c.digest()
    assert all(np.array_equal(x, y) for x, y in zip(a.arrays().values(), b.arrays().values()))


def test_streams_get_independent_seeds():
    assert derive_seed(0, "data") != derive_seed(0, "model")
    assert derive_seed(0, "data") == derive_seed(0, "data") != derive_seed(1, "data")


def test_save_and_load_round_trip(tmp_path):
    s = make_splits(100, 0.3, 0.6, 0.2, seed=1)
    s.save(tmp_path / "s.npz")
    assert Splits.load(tmp_path / "s.npz").digest() == s.digest()
